"""Load, verify and warm the model, then serve it under waitress (a production WSGI server that runs on ARM)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path

from edge_core.errors import EdgeError
from edge_core.service import ModelService

from .app import create_app
from .settings import ServerSettings

log = logging.getLogger("edgeport.server")

# Preprocessing.origin -> how the start-up line says where a bare file's preprocessing came from
PREPROCESSING_ORIGINS = {"declared": "declared, applied by the server", "metadata": "from the file's TFLite Model Metadata, applied by the server",
                         "none": "nothing declared or found: raw pixels"}


def load_service(settings: ServerSettings, bundle: Path | None = None) -> ModelService:
    """Load and verify (sha256, shapes and dtypes against bundle.json), then warm up: ready means warm."""
    svc = ModelService.from_path(bundle or settings.bundle, settings.labels, settings.service)
    svc.warmup()
    return svc


def configure_logging() -> None:
    # Access lines are JSON already: printed as they are, one per line, on stderr.
    for name, fmt in (("edgeport.access", "%(message)s"), ("edgeport.server", "edgeport: %(levelname)s: %(message)s")):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(fmt))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


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


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def exposure_warning(settings: ServerSettings) -> str | None:
    """A warning for a server anyone on the network can call without a key, or None."""
    if settings.host in LOOPBACK or settings.host.startswith("127.") or settings.api_key:
        return None
    return (f"edgeport: warning: listening on {settings.host} without an API key: anyone who can reach this "
            "address can use the model. Add --api-key-file FILE, or bind 127.0.0.1 behind a reverse proxy.")


def describe(svc: ModelService, settings: ServerSettings, seconds: float, processes: str = "") -> str:
    """The start-up lines: what is served, how, where; then one line per warning (a bare file whose
    preprocessing is a guess)."""
    lines = [
        f"edgeport: serving {svc.name!r} ({svc.bundle.format}/{svc.bundle.meta.get('precision')}, {svc.backend}, {processes}"
        f"{svc.pool_size} instances x {svc.threads} threads"
        f"{f' + 1 x {svc.solo_threads} for a request that arrives alone' if svc.solo_threads else ''}) on http://{settings.host}:{settings.port} "
        f"- ready in {seconds:.2f} s",
        f"edgeport: decoding {svc.decode_mode} ({svc.decode_reason})",
        f"edgeport: preprocessing {svc.preprocessing.describe()} "
        f"({'in the model graph' if not svc.bundle.meta.get('bare') else PREPROCESSING_ORIGINS[svc.preprocessing.origin]})",
    ]
    return "\n".join(lines + [f"edgeport: warning: {warning}" for warning in svc.warnings])


def serve(settings: ServerSettings) -> None:
    from .http_server import make_server

    from .supervisor import check, supervise

    check(settings)
    if (settings.processes or 1) > 1:  # supervised workers (supervisor.py)
        return supervise(settings)
    configure_logging()
    t0 = time.perf_counter()
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
    print(f"edgeport: request memory budget {budget.total >> 20} MiB ({budget.source})", flush=True)
    warning = exposure_warning(settings)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    # waitress refuses bodies over the limit from their Content-Length, before buffering a byte, and
    # answers JSON like the app (http_server.py): slow, idle and smuggling clients are guarded there.
    make_server(app, settings, http_threads).run()
