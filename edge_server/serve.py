"""Load, verify and warm the model, then serve it under waitress (a production WSGI server that runs on ARM)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from edge_core.errors import EdgeError

from .app import create_app
from .settings import ServerSettings
from .startup import configure_logging, describe, exposure_warning, load_service

log = logging.getLogger("edgeport.server")


def install_sighup(app) -> None:
    """SIGHUP reloads the bundle, like most daemons. The reload runs on its own thread:
    the handler runs on waitress's main (socket) thread, which must keep accepting."""
    if not hasattr(signal, "SIGHUP"):
        return
    st = app.extensions["edgeport"]

    def reload_in_background():
        try:
            st.reload()
        except EdgeError:
            pass  # ServerState.reload logged it; the old model keeps serving

    signal.signal(signal.SIGHUP, lambda signum, frame: threading.Thread(target=reload_in_background, daemon=True).start())


def serve(settings: ServerSettings) -> None:
    from dataclasses import replace

    from .http_server import make_server
    from .listen import bind
    from .supervisor import check, supervise

    check(settings)
    if (settings.processes or 1) > 1:  # supervised workers (supervisor.py)
        return supervise(settings)
    configure_logging()
    # waitress warns "Task queue depth" whenever a request waits for an HTTP thread: at concurrency 8 over
    # 4 threads, nearly every request, each a formatted line on stderr. Waiting for a thread is the pool's
    # design (serve() below), not news; worker.py quiets it likewise.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    # The port first: taken, it is one error line before anything loads or says "ready".
    sockets = bind(settings.host, settings.port)
    settings = replace(settings, port=sockets[0].getsockname()[1])  # --port 0: the one picked
    svc = load_service(settings)
    app = create_app(svc, settings, load=lambda path: load_service(settings, path))
    install_sighup(app)
    # Enough HTTP threads that every pooled instance stays busy while two more requests decode or wait
    # on sockets; more only add GIL contention (2 cores, c=8: 4 threads 1.21x the peer's throughput, 6: 1.16x, 8: 1.13x).
    http_threads = settings.http_threads or svc.pool_size + 2
    print(describe(svc, settings, time.perf_counter() - t0), flush=True)
    # Drop our reference: serve() lives as long as the server, and a local here would keep
    # the first model's interpreters alive after every hot reload (found by benchmarks/soak.py).
    del svc
    budget = app.extensions["edgeport"].budget
    server = make_server(app, settings, http_threads, sockets, budget=budget)  # sets the connections' buffers aside
    print(f"edgeport: request memory budget {budget.total >> 20} MiB ({budget.source})", flush=True)
    print(f"edgeport: HTTP bounds: {server.edgeport_bounds}", flush=True)
    warning = exposure_warning(settings)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    # waitress refuses bodies over the limit from their Content-Length, before buffering a byte, and
    # answers JSON like the app (http_server.py): slow, idle and smuggling clients are guarded there.
    server.run()
