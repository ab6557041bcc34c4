"""`edgeport serve --processes N`: a small supervisor over N pre-forked worker processes.

The process that decodes untrusted images must be one that may die. The
supervisor holds the listening socket and nothing a request can reach: it
loads no model and reads no request. It forks N workers (worker.py) that
share its socket, each loading the model, serving under the same guarded
waitress as a single process, and capping its own memory. The supervisor:

- replaces a worker that dies (SIGKILL, a crash in a C library, the kernel's
  OOM killer) at once; the connections waiting in the shared accept queue are
  taken by the others, so only the requests the dead worker held are lost;
- replaces a worker that asks to retire (--max-requests served, RSS that
  stays high with nothing in flight, a MemoryError) by starting its successor
  first and draining it (SIGTERM) once the successor is ready;
- rolls every worker onto the bundle on SIGHUP or after /admin/reload, one at
  a time, the same way: no moment without a ready worker, no request dropped;
- aggregates metrics: workers write prometheus_client's multiprocess files into
  one folder, so /metrics from any of them sums all of them.

Why not gunicorn's arbiter: its workers speak HTTP through gunicorn's own
parser, not waitress (its sync worker holds one connection at a time, and
gunicorn's docs ask for a buffering proxy in front of it against slow
clients), so every guard of http_server.py (header and body deadlines,
withheld 100-continue, Content-Length with Transfer-Encoding refused, JSON
errors, lingering close) would have to be written again for it; what this
needs of an arbiter is fork, reap, replace, roll and drain. Why one
shared socket and not SO_REUSEPORT: the kernel hashes each connection to one
of the reuseport sockets when it arrives, so the connections queued on a
worker that dies are reset with it, and a busy worker's queue cannot be
taken by an idle one; one inherited socket has one queue that any worker
with a free thread takes from (worker.share_only_when_free).
"""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from edge_core.errors import EdgeError

from . import cgroup
from .budget import MiB, current_rss
from .settings import ServerSettings

log = logging.getLogger("edgeport.server")

# A worker must be ready this long after it was forked, or it is killed (a hung load).
START_TIMEOUT_S = 120.0
# After a replacement failed to start (a bundle that no longer loads), the next try waits this long.
RESPAWN_BACKOFF_S = 1.0


def default_processes(profile: dict | None) -> int | None:
    """A device profile's [serve] processes, or None."""
    value = ((profile or {}).get("serve") or {}).get("processes")
    return int(value) if value else None


def check(settings: ServerSettings) -> None:
    if settings.processes is not None and settings.processes < 1:
        raise EdgeError(f"Expected --processes of 1 or more. Received: {settings.processes}")
    if settings.max_requests < 0:
        raise EdgeError(f"Expected --max-requests of 0 (never) or more. Received: {settings.max_requests}")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def worker_settings(settings: ServerSettings, processes: int, supervisor_rss: int) -> ServerSettings:
    """Settings each worker runs with: one model instance and its share of the cores and of the memory,
    unless the flags or the profile said otherwise. The solo instance keeps its default (every core for a
    request that arrives while its worker has no other): a lone request is as fast as in one process."""
    svc = settings.service
    service = replace(svc, pool_size=svc.pool_size or 1, threads=svc.threads or max(1, cores() // processes))
    # The request budget (admission by estimate) and the hard limit (RLIMIT_DATA: the wall) are both the
    # worker's share of the memory limit unless --worker-memory-mb sets the wall apart.
    share = max(64 * MiB, ((settings.memory_limit or 0) - supervisor_rss) // processes)
    # The connection limit is the server's, not each worker's: N workers must not hold N times the buffers.
    return replace(settings, service=service, memory_limit=share, worker_memory=settings.worker_memory or share,
                   connection_limit=max(16, settings.connection_limit // processes),
                   spool_bytes=(settings.spool_bytes if settings.spool_bytes is not None else 4 * settings.max_body_bytes) // processes,
                   memory_source=f"{settings.memory_source or '--memory-budget-mb'}, less the supervisor, shared by {processes} workers")


def fold_metrics(pid: int, folder: str) -> None:
    """Add a gone worker's counter and histogram files into one file per kind (`counter_retired.db`).

    prometheus_client keeps one file per process and a scrape reads them all: without this, a server that
    recycles a worker every --max-requests would read one more file per scrape for every retired worker.
    The sum is built beside the archive and renamed over it, then the worker's file is removed; a scrape
    in the microseconds between the two sees that worker's counts twice."""
    from prometheus_client.mmap_dict import MmapedDict

    if not folder:
        return
    for kind in ("counter", "histogram"):
        src = Path(folder) / f"{kind}_{pid}.db"
        if not src.is_file():
            continue
        archive = Path(folder) / f"{kind}_retired.db"
        tmp = archive.with_suffix(".db.tmp")  # not *.db: scrapes ignore it while it is built
        if archive.is_file():
            shutil.copyfile(archive, tmp)
        total = MmapedDict(str(tmp))
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(src)):
                total.write_value(key, total.read_value(key)[0] + value, timestamp)
        finally:
            total.close()
        os.replace(tmp, archive)
        src.unlink()


@dataclass(eq=False)
class Worker:
    pid: int
    fd: int  # read end of its pipe
    index: int
    generation: int  # the reload it was started for
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    draining: bool = False  # SIGTERMed by us: its exit is expected
    kill_at: float | None = None
    replaces: Worker | None = None  # the worker it takes over from, once ready
    successor: Worker | None = None  # the worker starting to take over from this one
    failed: str | None = None
    info: dict = field(default_factory=dict)  # its "ready" message
    buffer: bytes = b""


class Supervisor:
    def __init__(self, settings: ServerSettings, sockets: list[socket.socket], processes: int):
        self.settings = settings
        self.sockets = sockets
        self.processes = processes
        self.workers: dict[int, Worker] = {}
        self.generation = 0
        self.stopping = False
        self.signals: list[int] = []
        # (when, slot index, the worker to replace or None): another try after a worker failed to start
        self.later: list[tuple[float, int, Worker | None]] = []
        self.start_error: str | None = None  # the first worker that failed while the service was starting
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # --- workers ------------------------------------------------------------------------------------

    def spawn(self, index: int, replaces: Worker | None = None) -> Worker:
        from . import worker as worker_module

        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns from here
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for fd in [r, self._wake_r, self._wake_w, *(x.fd for x in self.workers.values())]:
                    os.close(fd)
                worker_module.run(self.settings, self.sockets, w, index, self.processes)
                code = 0
            except BaseException:  # noqa: BLE001 - a worker's last words go to stderr, then it exits
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(w)
        os.set_blocking(r, False)
        wk = Worker(pid, r, index, self.generation, replaces=replaces)
        if replaces is not None:
            replaces.successor = wk
        self.workers[pid] = wk
        self.sel.register(r, selectors.EVENT_READ, wk)
        return wk

    def drain(self, wk: Worker) -> None:
        """SIGTERM: the worker stops accepting, finishes its requests and exits; killed if it overstays."""
        if wk.draining:
            return
        wk.draining = True
        wk.kill_at = time.monotonic() + self.settings.request_timeout_s + 10
        try:
            os.kill(wk.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def serving(self) -> list[Worker]:
        return [w for w in self.workers.values() if not w.draining and w.replaces is None]

    def on_message(self, wk: Worker, msg: dict) -> None:
        event = msg.get("event")
        if event == "ready":
            wk.ready = True
            old, wk.replaces = wk.replaces, None
            if old is not None:
                old.successor = None
                self.drain(old)
            if not self.stopping and self.announced:
                log.info("worker %d (pid %d) ready in %.2f s%s", wk.index, wk.pid, time.monotonic() - wk.started,
                         f", replacing pid {old.pid}" if old else "")
            wk.info = msg
            self.roll()
        elif event == "failed":
            wk.failed = msg.get("error") or "failed to start"
            self.start_error = self.start_error or wk.failed
        elif event == "retire":
            log.info("worker %d (pid %d) retires: %s", wk.index, wk.pid, msg.get("reason"))
            if wk.successor is None and not wk.draining:
                self.spawn(wk.index, replaces=wk)
        elif event == "reload":
            self.reload(Path(msg["bundle"]))

    def on_exit(self, pid: int, status: int) -> None:
        from prometheus_client import multiprocess

        wk = self.workers.pop(pid, None)
        if wk is None:
            return
        try:
            self.sel.unregister(wk.fd)
        except (KeyError, ValueError):
            pass
        self._read(wk)  # its last messages (a "failed" sent just before it exited)
        os.close(wk.fd)
        cgroup.remove(cgroup.folder_of(pid))
        multiprocess.mark_process_dead(pid)  # its live gauges leave the sums
        fold_metrics(pid, os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""))  # its counters stay in them
        if wk.draining or self.stopping:
            return
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit code {os.WEXITSTATUS(status)}"
        if not wk.ready:
            self.start_error = self.start_error or wk.failed or f"a worker exited while starting ({how})"
        old = wk.replaces
        if old is not None:  # a successor that never became ready: the worker it was to replace serves on
            old.successor = None
            log.error("a new worker failed to start, worker pid %d serves on: %s", old.pid, wk.failed or how)
            if old.generation < self.generation:  # a reload: abandoned, every worker serves on as it is
                log.error("reload abandoned: every worker keeps the bundle it serves")
                for x in self.workers.values():
                    x.generation = self.generation
            else:  # a retirement: try again shortly
                self.later.append((time.monotonic() + RESPAWN_BACKOFF_S, old.index, old))
            return
        if wk.successor is not None:  # its successor was already starting: that one takes the slot
            wk.successor.replaces = None
            return
        log.warning("worker %d (pid %d) died (%s); starting another", wk.index, pid, wk.failed or how)
        if wk.ready:
            self.spawn(wk.index)
        else:  # it never became ready: do not fork in a tight loop
            self.later.append((time.monotonic() + RESPAWN_BACKOFF_S, wk.index, None))

    def reload(self, bundle: Path | None = None) -> None:
        """Start rolling every worker onto the bundle (the current one on SIGHUP): one at a time."""
        if bundle is not None:
            self.settings = replace(self.settings, bundle=bundle)
        self.generation += 1
        log.info("rolling %d workers onto %s", self.processes, self.settings.bundle)
        self.roll()

    def roll(self) -> None:
        if self.stopping or any(w.replaces is not None and w.generation == self.generation for w in self.workers.values()):
            return  # one replacement at a time
        for wk in self.serving():
            if wk.generation < self.generation and wk.successor is None:
                self.spawn(wk.index, replaces=wk)
                return

    # --- the loop -----------------------------------------------------------------------------------

    def _read(self, wk: Worker) -> None:
        while True:
            try:
                chunk = os.read(wk.fd, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            wk.buffer += chunk
        *lines, wk.buffer = wk.buffer.split(b"\n")
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            self.on_message(wk, msg)

    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)

    def step(self, timeout: float = 0.5) -> None:
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            else:
                self._read(key.data)
        while self.signals:
            sig = self.signals.pop(0)
            if sig == signal.SIGCHLD:
                self.reap()
            elif sig == signal.SIGHUP:
                self.reload()
            else:
                self.stopping = True
        now = time.monotonic()
        for entry in [x for x in self.later if x[0] <= now]:
            self.later.remove(entry)
            _, index, old = entry
            if self.stopping:
                continue
            if old is None:
                self.spawn(index)
            elif old.pid in self.workers and not old.draining and old.successor is None:
                self.spawn(index, replaces=old)
        for wk in list(self.workers.values()):
            if wk.kill_at is not None and now > wk.kill_at:
                self._kill(wk)
            elif not wk.ready and now - wk.started > START_TIMEOUT_S:
                wk.failed = f"not ready in {START_TIMEOUT_S:g} s"
                self._kill(wk)

    def _kill(self, wk: Worker) -> None:
        try:
            os.kill(wk.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wk.kill_at = None

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.on_exit(pid, status)

    announced = False

    def start(self) -> list[dict]:
        """Fork the workers and wait until every one is ready; the first failure stops the start."""
        for index in range(self.processes):
            self.spawn(index)
        while not all(w.ready for w in self.workers.values()) or len(self.workers) < self.processes:
            if self.start_error or self.stopping:
                reason = self.start_error or "interrupted while starting"
                self.stop()
                raise EdgeError(reason)
            self.step(0.2)
        self.announced = True
        return [w.info for w in sorted(self.workers.values(), key=lambda w: w.index)]

    def run(self) -> None:
        while not self.stopping:
            self.step()
        self.stop()

    def stop(self) -> None:
        """Drain every worker, wait for them (killing those that overstay), and return."""
        self.stopping = True
        for wk in list(self.workers.values()):
            self.drain(wk)
        while self.workers:
            self.reap()
            self.step(0.1)
        for sock in self.sockets:
            sock.close()


def supervise(settings: ServerSettings) -> None:
    from .listen import bind
    from .startup import configure_logging, decide_precision_once, exposure_warning

    configure_logging()
    t0 = time.perf_counter()
    processes = settings.processes or 1
    # The port first (listen.bind): taken, it is one error line before any worker starts.
    sockets = bind(settings.host, settings.port)
    for sock in sockets:
        sock.set_inheritable(True)
    settings = replace(settings, port=sockets[0].getsockname()[1])  # --port 0: the one picked
    metrics_dir = tempfile.mkdtemp(prefix="edgeport-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    sup = Supervisor(decide_precision_once(worker_settings(settings, processes, current_rss())), sockets, processes)
    try:
        sup.install_signals()
        infos = sup.start()
        first = infos[0]
        # Printed once every worker has said it is ready: their socket is served and their model warm.
        print(re.sub(r"ready in [0-9.]+ s", f"ready in {time.perf_counter() - t0:.2f} s", first["text"], count=1), flush=True)
        print(f"edgeport: supervisor pid {os.getpid()}, worker pids {' '.join(str(i['pid']) for i in infos)}; "
              f"a worker is replaced after {settings.max_requests or 'unlimited'} requests, when it dies, or when its RSS stays "
              f"above its mark", flush=True)
        print(f"edgeport: request memory budget {first['budget']} per worker; hard limit {first['limit']} per worker", flush=True)
        print(f"edgeport: HTTP bounds per worker: {first.get('bounds')}", flush=True)
        warning = exposure_warning(settings)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        sup.run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
