"""One supervised worker process: load the model, serve the supervisor's socket under waitress, and die cleanly.

A worker is forked by the supervisor (supervisor.py) with the listening
socket already open. It loads and warms its own model (interpreters and their
threads do not survive a fork, so none exist before it), builds the same app
and the same guarded waitress server as a single process, then caps its own
memory (RLIMIT_DATA) so that an image that costs more than any estimate
fails in this process only.

It talks to the supervisor over one pipe, one JSON line per event:

- ``ready``: the model is warm and the socket is served (with the start-up text);
- ``retire``: replace me (request count reached, RSS stayed high, a MemoryError);
- ``reload``: /admin/reload loaded a bundle here: roll every worker onto it.

SIGTERM drains: the worker stops accepting, finishes what it holds, and exits.
SIGINT and SIGHUP are the supervisor's to act on: a terminal sends them to the
whole process group, and a worker that died of them would drop its requests.
"""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import signal
import threading
import time
import warnings

from waitress.server import BaseWSGIServer

from . import cgroup
from .budget import MiB, current_rss, give_back_memory
from .http_server import GuardedChannel, GuardedParser, make_server

# A recycled worker's request count varies by up to this fraction, so workers started together are not all
# replaced at the same moment.
MAX_REQUESTS_JITTER = 0.1
# RSS above the recycle mark after this many requests in a row that ended with nothing in flight (and a
# malloc_trim): the memory is the allocator's and it will not come back; a fresh process starts at its baseline.
RSS_STRIKES = 3


def vm_data() -> int:
    """Private writable memory mapped by this process (what RLIMIT_DATA counts), in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cap_memory(headroom: int) -> int | None:
    """Limit this process's data mappings to what it maps now plus `headroom` bytes; returns the limit.

    RLIMIT_DATA, not RLIMIT_AS: glibc reserves 64 MiB of address space per thread arena and LiteRT/numpy map
    large regions they never touch, so the address space says little about memory; RLIMIT_DATA counts
    private writable mappings only (heap, anonymous mmap: where decoded images and tensors live).
    """
    now = vm_data()
    if not now:
        return None
    limit = now + max(headroom, 16 * MiB)
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ValueError, OSError):
        return None
    return limit


class WorkerLink:
    """The pipe to the supervisor: one JSON line per event. Writes are small (< PIPE_BUF), hence atomic."""

    def __init__(self, fd: int):
        self.fd = fd
        self._lock = threading.Lock()

    def send(self, event: str, **fields) -> None:
        data = (json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n").encode()
        with self._lock:
            try:
                os.write(self.fd, data)
            except OSError:
                pass  # the supervisor is gone; its death ends us soon enough (PDEATHSIG or SIGTERM)


class Tally:
    """Requests this worker holds and has served; asks once to be retired when it should be."""

    def __init__(self, link: WorkerLink, max_requests: int, rss_mark: int | None):
        self.link = link
        self.max_requests = max_requests
        self.rss_mark = rss_mark
        self.in_flight = 0
        self.served = 0
        self.strikes = 0
        self.retiring = False
        self._lock = threading.Lock()

    def started(self) -> int:
        with self._lock:
            self.in_flight += 1
            return self.in_flight

    def finished(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.served += 1
            idle = self.in_flight == 0
            served = self.served
        if self.max_requests and served >= self.max_requests:
            self.retire(f"served {served} requests (--max-requests)")
        elif idle and self.rss_mark:
            self._check_rss()

    def _check_rss(self) -> None:
        rss = current_rss()
        if rss <= self.rss_mark:
            self.strikes = 0
            return
        give_back_memory()
        rss = current_rss()
        self.strikes = self.strikes + 1 if rss > self.rss_mark else 0
        if self.strikes >= RSS_STRIKES:
            self.retire(f"RSS {rss // MiB} MiB stayed above {self.rss_mark // MiB} MiB with nothing in flight")

    def retire(self, reason: str) -> None:
        with self._lock:
            if self.retiring:
                return
            self.retiring = True
        self.link.send("retire", reason=reason)


def counted(app, tally: Tally):
    """The WSGI app, counting each request in and out for the tally; each answer names the worker that
    made it (X-Edgeport-Worker: its pid), so a log or a client can tell workers apart."""
    worker = ("X-Edgeport-Worker", str(os.getpid()))

    def wsgi(environ, start_response):
        environ["edgeport.worker.concurrent"] = tally.started()
        try:
            return app(environ, lambda status, headers, *exc: start_response(status, [*headers, worker], *exc))
        finally:
            tally.finished()
    return wsgi


def memory_error_handler(tally: Tally, limit_text: str):
    """A MemoryError inside a request: the worker's hard limit was reached. The request that met it is
    answered here; the worker asks to be replaced (its heap may be fragmented, a C library may have left
    state half-built) and keeps serving until the replacement is ready."""
    from flask import g, jsonify, request

    def handle(e: MemoryError):
        alone = request.environ.get("edgeport.worker.concurrent", 1) <= 1
        tally.retire("a request raised MemoryError")
        ctx = g.get("edgeport_request")
        # Alone, the request itself is too large for a worker: 413, do not retry. With others in flight
        # it may fit later: 503 with Retry-After.
        status = 413 if alone else 503
        message = (f"Expected a request that fits a worker's memory ({limit_text}). Received: one that ran out of it "
                   f"{'on its own' if alone else 'while other requests held memory; retry'}")
        if ctx is not None:
            ctx.error = message[:200]
        resp = jsonify({"error": message})
        resp.status_code = status
        if not alone:
            resp.headers["Retry-After"] = "1"
        return resp

    return handle


# A draining worker closes a keep-alive connection that has been idle this long. Sooner, and a client
# sending its next request right after an answer would find the connection closing under it.
DRAIN_IDLE_S = 1.0


class DrainingParser(GuardedParser):
    """Once the worker drains, every request it reads is answered with `Connection: close` (waitress
    decides from the request's Connection header), so a keep-alive client reconnects to another worker
    instead of finding its connection gone."""

    draining = False  # set on the class: one worker, one server

    def received(self, data):
        n = super().received(data)
        if DrainingParser.draining and self.headers_finished:
            self.headers["CONNECTION"] = "close"
        return n


class DrainingChannel(GuardedChannel):
    parser_class = DrainingParser


def install_drain(server, settings) -> None:
    """SIGTERM: stop accepting, let the requests being handled finish, then leave the loop.

    Checked at once and then on every maintenance pass of waitress's loop (once a second): requests are
    answered with `Connection: close`, connections idle for DRAIN_IDLE_S are closed; past the request
    timeout (plus a few seconds for the answer to be written) whatever is left is dropped."""
    for d in listeners(server):
        d.channel_class = DrainingChannel
    state = {"deadline": None}

    def drained() -> bool:
        busy = server.task_dispatcher.active_count + len(server.task_dispatcher.queue)
        channels = [ch for d in listeners(server) for ch in list(d.active_channels.values())]
        now = time.time()
        for ch in channels:
            for req in list(ch.requests):  # read before the drain began, not answered yet
                req.headers["CONNECTION"] = "close"
            idle = not ch.requests and ch.request is None and not ch.total_outbufs_len
            if idle and now - ch.last_activity > DRAIN_IDLE_S:
                ch.will_close = True  # the loop's next pass closes it
        return busy == 0 and not channels

    for d in listeners(server):
        def maintenance(now, original=d.maintenance):
            original(now)
            if state["deadline"] is not None and (drained() or time.monotonic() > state["deadline"]):
                raise SystemExit(0)  # waitress's run() catches it and stops its threads
        d.maintenance = maintenance

    def on_term(signum, frame):
        if state["deadline"] is None:
            DrainingParser.draining = True
            state["deadline"] = time.monotonic() + settings.request_timeout_s + 5
            for d in listeners(server):
                d.accepting = False  # readable() turns False: this worker accepts nothing more
                d.next_channel_cleanup = 0  # run the drain check on the loop's next pass

    signal.signal(signal.SIGTERM, on_term)


def share_only_when_free(server) -> None:
    """A worker whose HTTP threads are all busy leaves new connections in the shared accept queue for a
    worker that has one free: waitress accepts on its own loop thread whatever its task threads are doing,
    so without this a busy worker would keep taking connections while another sat idle."""
    dispatcher = server.task_dispatcher
    threads = len(dispatcher.threads) or 1
    def free_readable(d):
        own = d.readable  # the maintenance pass and the connection limit (http_server.accept_beyond_the_limit)

        def readable():
            return own() and dispatcher.active_count + len(dispatcher.queue) < threads
        return readable

    for d in listeners(server):
        d.readable = free_readable(d)


def listeners(server) -> list:
    """The listening dispatchers: the server itself for one socket, else those in its map (one per address)."""
    return [d for d in getattr(server, "map", {}).values() if isinstance(d, BaseWSGIServer)] or [server]


def run(settings, sockets: list, fd: int, index: int, processes: int) -> None:
    """The worker's life, in the forked child. Never returns to the caller's code: the caller os._exit()s."""
    from prometheus_client import values

    from .app import create_app
    from .startup import configure_logging, describe, load_service

    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _die_with_parent()
    # prometheus_client picks its value class when first imported (in the supervisor, before the
    # multiprocess folder existed): metrics built from here on write this worker's value files.
    values.ValueClass = values.MultiProcessValue()
    # The model-info gauge is cleared before it is set; in multiprocess mode that is a no-op with a warning
    # (this worker's series are its own and go with it).
    warnings.filterwarnings("ignore", message="Clearing labels has not been implemented")
    link = WorkerLink(fd)
    # The backstop above RLIMIT_DATA (cgroup.py): a quarter more than the worker's memory, so that the
    # data limit is met first and answers the request; the cgroup catches what that limit does not count.
    group = cgroup.join_own(settings.worker_memory + settings.worker_memory // 4)
    configure_logging()
    # waitress warns whenever a task waits for a thread; a worker's queue is the shared socket's
    # accept queue (share_only_when_free), and one waiting task is the normal case under load.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    try:
        svc = load_service(settings)
    except Exception as e:  # noqa: BLE001 - the supervisor reports it; the old workers serve on
        link.send("failed", error=str(e).splitlines()[0][:500] if str(e) else type(e).__name__)
        return
    wall = settings.worker_memory
    app = create_app(svc, settings, load=lambda path: load_service(settings, path))
    st = app.extensions["edgeport"]
    headroom = max(0, wall - current_rss())
    rss_mark = settings.recycle_rss or (current_rss() + st.budget.total // 2)
    tally = Tally(link, _jittered(settings.max_requests), rss_mark)
    app.register_error_handler(MemoryError, memory_error_handler(tally, f"{wall // MiB} MiB"))
    # Memory the allocator keeps after a burst (16 Mpx decodes, 19 MiB bodies) refused every request 503 for
    # minutes: at the first request it refuses with nothing in flight, this worker asks for its successor.
    st.budget.on_stuck = lambda rss: tally.retire(f"RSS {rss // MiB} MiB stays above the request budget's ceiling "
                                                  f"with nothing in flight")
    _announce_reloads(st, link)
    http_threads = settings.http_threads or svc.pool_size + 2
    server = make_server(counted(app, tally), settings, http_threads, sockets, budget=st.budget)
    install_drain(server, settings)
    share_only_when_free(server)
    text = describe(svc, settings, time.perf_counter() - t0, f"{processes} processes x ")
    del svc  # as in serve(): a local would keep the first model alive after a reload
    limit = cap_memory(headroom)
    link.send("ready", index=index, text=text, budget=f"{st.budget.total >> 20} MiB ({st.budget.source})",
              bounds=server.edgeport_bounds,
              limit=(f"{limit // MiB} MiB of data mappings (RLIMIT_DATA)" if limit else "none (RLIMIT_DATA unavailable)")
              + (f", {(settings.worker_memory + settings.worker_memory // 4) // MiB} MiB in a memory cgroup of its own" if group
                 else ", no memory cgroup of its own (none writable here)"))
    server.run()


def _jittered(n: int) -> int:
    return int(n * (1 + random.uniform(0, MAX_REQUESTS_JITTER))) if n else 0


def _announce_reloads(st, link: WorkerLink) -> None:
    """/admin/reload loads and verifies the bundle in this worker (a bad one: 422, nothing changes), then
    asks the supervisor to roll every worker onto it, this one included."""
    local_reload = st.reload

    def reload(bundle=None):
        result = local_reload(bundle)
        link.send("reload", bundle=str(st.settings.bundle))
        return result

    st.reload = reload


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies (even by SIGKILL), so no orphan keeps the port."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
