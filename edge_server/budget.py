"""A memory budget for requests: estimate a request's peak before doing the work, admit it or refuse it.

Unchecked, one request can take the server down: a 19 MiB JSON body of
empty lists peaks at 735 MB while being parsed, a 34-byte WebP claiming
6000x6000 at 414 MB while being decoded. So every request's peak is
estimated first, from what is known cheaply (Content-Length, the image
header, a count of JSON brackets and commas), and reserved against a budget:

- more than the whole budget: 413, it can never fit;
- more than what is free now: wait briefly for others to finish, then 503
  with Retry-After (the client may try again; the server stays up).

The budget is the process's memory limit (cgroup `memory.max`, a device
profile's `service.memory_max`, or an explicit setting) minus what the
server already uses when it starts (model, runtime, Python) minus a margin
for what is not estimated (allocator slack, HTTP buffers, threads' stacks).
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
import time
from pathlib import Path

from .cgroup import memory_cgroups

from edge_core.errors import Busy, TooLarge

MiB = 1 << 20
# What estimates miss: allocator fragmentation, waitress's buffers, Python objects per request.
MARGIN_FRACTION = 0.15
MIN_MARGIN = 48 * MiB
# How long a request waits for memory others hold before it is answered 503: long enough to
# ride out a burst of a few large images (a 12 Mpx decode takes ~0.2 s on a Pi 4), short
# enough that a client is not left hanging.
DEFAULT_WAIT_S = 2.0
RETRY_AFTER_S = 2
# Without any limit (a workstation, no cgroup cap, no profile): plan for half the RAM.
UNLIMITED_FRACTION = 0.5

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """systemd-style sizes ("600M", "2G", "1048576") -> bytes."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"Expected a size such as 600M or 2G. Received: {text!r}")
    return int(float(m[1]) * _UNITS[m[2].upper()])


def cgroup_memory_limit() -> int | None:
    """This process's cgroup memory limit in bytes (v2 `memory.max`, else v1), or None if unlimited."""
    for folder, limit in memory_cgroups():
        try:
            raw = (folder / limit).read_text().strip()
        except OSError:
            continue
        if raw == "max":
            continue
        value = int(raw)
        if value < (1 << 60):  # v1 says "no limit" with a huge number
            return value
    return None


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def current_rss() -> int:
    """Resident memory of this process now (bytes); 0 where /proc is missing."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def process_limit(explicit: int | None = None, profile: dict | None = None) -> tuple[int, str]:
    """The memory this server may use and where that figure came from (printed at start-up)."""
    found = []
    if explicit:
        found.append((explicit, "--memory-budget-mb"))
    cg = cgroup_memory_limit()
    if cg:
        found.append((cg, "the cgroup memory limit"))
    service = (profile or {}).get("service") or {}
    if service.get("memory_max"):
        try:
            found.append((parse_size(service["memory_max"]), f"the {profile.get('name')} profile's memory_max"))
        except ValueError:
            pass
    if found:
        return min(found)  # the tightest limit is the one that kills us
    ram = physical_memory() or 1 << 30
    return int(ram * UNLIMITED_FRACTION), f"half the RAM ({ram // MiB} MiB): no cgroup limit or profile"


class Budget:
    """Bytes reserved by requests in flight, against a fixed total. Thread-safe."""

    def __init__(self, total: int, wait_s: float = DEFAULT_WAIT_S, source: str = "", ceiling: int | None = None):
        self.total = max(int(total), 16 * MiB)
        self.wait_s = wait_s
        self.source = source
        # The process's own RSS may not exceed `ceiling` (limit - margin): reservations alone miss memory
        # that earlier requests freed but the allocator kept (fragmentation), and what nothing estimated.
        self.ceiling = ceiling
        self.used = 0
        self.peak = 0
        self.aside = 0  # set_aside(): bytes held for good by the HTTP layer's buffers
        # Called (with the RSS) when nothing is in flight and RSS stays above the ceiling after a trim; a
        # supervised worker asks to be replaced then (worker.py): a fresh process starts at its baseline.
        self.on_stuck = None
        self.limit: int | None = None  # the process's limit (for_process): ceiling + margin
        self.refused = {"413": 0, "503": 0}
        self._cond = threading.Condition()
        self._released_since_trim = 0
        self._last_trim = 0.0

    @classmethod
    def for_process(cls, limit: int, source: str, baseline: int | None = None, wait_s: float = DEFAULT_WAIT_S) -> "Budget":
        baseline = current_rss() if baseline is None else baseline
        margin = max(MIN_MARGIN, int(limit * MARGIN_FRACTION))
        # A worker's share of a small cap can leave less above its baseline than MIN_MARGIN: then the RSS
        # ceiling (limit - margin) stood below the baseline and every request was 503 (256 MiB, 2 workers:
        # 103 MiB each, 73 MiB at start). Half of what is left above the baseline stays the margin there.
        margin = min(margin, max(0, limit - baseline) // 2)
        budget = cls(limit - baseline - margin, wait_s, f"{source}: {limit // MiB} MiB - {baseline // MiB} MiB at start - {margin // MiB} MiB margin",
                     ceiling=limit - margin)
        budget.limit = limit
        return budget

    def set_aside(self, nbytes: int, what: str) -> int:
        """Take `nbytes` out of the total for good (the HTTP layer's connection buffers, held whatever the
        requests do); the total keeps at least half of what it was. Returns the bytes taken."""
        nbytes = max(0, min(int(nbytes), self.total // 2))
        with self._cond:
            self.total -= nbytes
            self.aside += nbytes
            self.source += f" - {_mib(nbytes)} for {what}"
        return nbytes

    def _fits(self, nbytes: int) -> bool:
        if self.used + nbytes > self.total:
            return False
        if self.ceiling is None or self.used:  # with others in flight, their reservations already stand for their memory
            return True
        if current_rss() + nbytes <= self.ceiling:
            return True
        give_back_memory()  # nobody in flight: what RSS holds beyond the baseline is the allocator's; hand it back
        rss = current_rss()
        if rss + nbytes <= self.ceiling:
            return True
        if self.on_stuck is None:
            return False
        # It will not come back: every request would be 503 until the process goes. A supervised worker asks
        # for its successor, and meanwhile admits a request alone up to its limit (the margin is for others'
        # unestimated memory; none are in flight, and its hard limit answers a request that passes it).
        self.on_stuck(rss)
        return self.limit is not None and rss + nbytes <= self.limit

    def reserve(self, nbytes: int, what: str) -> int:
        """Block until `nbytes` fit (up to wait_s), then count them as used. Returns nbytes for release()."""
        nbytes = max(0, int(nbytes))
        if nbytes > self.total:
            with self._cond:
                self.refused["413"] += 1
            raise TooLarge(f"Expected a request this server can hold in memory: at most {self.total // MiB} MiB "
                           f"at its peak. Received: {what}, needing about {_mib(nbytes)}")
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while not self._fits(nbytes):
                left = deadline - time.monotonic()
                if left <= 0:
                    self.refused["503"] += 1
                    raise Busy(f"Server busy: other requests hold its memory. Expected to fit {_mib(nbytes)} "
                               f"({what}) in the {_mib(self.total - self.used)} free of {self.total // MiB} MiB. "
                               f"Received: no room within {self.wait_s:g} s; retry after {RETRY_AFTER_S} s",
                               retry_after=RETRY_AFTER_S)
                self._cond.wait(left)
            self.used += nbytes
            self.peak = max(self.peak, self.used)
        return nbytes

    def release(self, nbytes: int) -> None:
        trim = False
        with self._cond:
            self.used -= nbytes
            self._released_since_trim += nbytes
            now = time.monotonic()
            if self.used == 0 and self._released_since_trim >= TRIM_AFTER and now - self._last_trim >= TRIM_EVERY_S:
                self._released_since_trim, self._last_trim = 0, now  # the burst is over
                trim = True
            self._cond.notify_all()
        if trim:
            give_back_memory()


# glibc keeps freed memory in its arenas: after a burst of large decodes RSS stayed at 328 MB.
# malloc_trim(0) hands free pages back to the system; it costs ~1 ms, so only after a lot was freed, and
# at most once a second: at concurrency 1 every request ends a "burst", and a trim every dozen camera photos
# was 2.3% of the request path's CPU. What a skipped trim leaves is handed back by the next admission that
# finds the RSS over its ceiling (_fits), or by a worker's idle check before it would recycle.
TRIM_AFTER = 16 * MiB
TRIM_EVERY_S = 1.0
_libc = None


def give_back_memory() -> None:
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        _libc = False


def _mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


# --- estimates -------------------------------------------------------------------------------------

# Per object json.loads builds, then pixel_array's numpy copies. Against tracemalloc on CPython 3.11
# (json.loads + pixel_array), estimate (text included) / measured peak: ints [8,64,64,3] 7.6 / 5.8 MB,
# floats 9.1 / 8.2 MB, 1 M empty lists (3 MB of "[],") 139 / 96 MB - the bomb's 32x its size.
JSON_BYTES_PER_CONTAINER = 96
JSON_BYTES_PER_VALUE = 32


def json_counts(raw: bytes) -> tuple[int, int]:
    """(containers, values) an upper bound on the objects json.loads would build, counted in C at GB/s
    without building any. Brackets inside strings count too: that only overestimates."""
    containers = raw.count(b"[") + raw.count(b"{")
    values = raw.count(b",") + raw.count(b":") + 1
    return containers, values


def json_peak(raw: bytes, containers: int, values: int) -> int:
    # the text itself + Python objects + one numpy copy (float64) of the values
    return len(raw) + containers * JSON_BYTES_PER_CONTAINER + values * (JSON_BYTES_PER_VALUE + 8)


# An image's peak is estimated where it is decoded: edge_core.imageio.decode_peak (a table by mode
# and format, checked against measured peaks by tests/test_admission_estimates.py).
