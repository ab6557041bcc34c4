"""Server settings: one dataclass, filled by the CLI (and a device profile), read by the app.

Each field that is a `serve` flag declares it (edge_core.options): the parser is built from
these fields and ServiceOptions', and the parsed values come back by field name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_core.options import option
from edge_core.service import ServiceOptions

MiB = 1024 * 1024


def megabytes(text: str) -> int:
    """A flag's megabytes (a float) as bytes."""
    return int(float(text) * MiB)


@dataclass
class ServerSettings:
    bundle: Path = option(help="a bundle folder, or a bare .tflite/.onnx file", positional=True, type=Path)
    labels: Path | None = option(None, "labels file for a bare model file (one per line)", type=Path)
    # loopback unless told otherwise
    host: str = option("127.0.0.1", "address to bind (default 127.0.0.1: this machine only)")
    port: int = option(8080, type=int)
    device: str | None = option(None, "device profile for defaults (see devices/profiles)")
    api_key: str | None = None  # None: no key needed, and the admin endpoints are off
    api_key_file: Path | None = option(None, "file holding the API key clients must send (one word on one line)", type=Path)
    max_body_bytes: int = option(20 * MiB, "largest request body accepted", flag="--max-body-mb", type=megabytes)
    # Memory the server may use (bytes); None: the cgroup limit, the device profile's memory_max, or half
    # the RAM, whichever is tightest (budget.process_limit). Requests are admitted against it minus the
    # memory in use at start-up.
    memory_limit: int | None = option(None, "memory the server may use; requests are admitted against it (default: the cgroup limit, "
                                            "the device profile's memory_max or half the RAM, whichever is smallest)",
                                      flag="--memory-budget-mb", type=megabytes)
    memory_source: str = ""
    # A request's whole time in the app (decode, wait for an instance, inference); past it: 503.
    request_timeout_s: float = option(15.0, "seconds a request may spend decoding, waiting and inferring before it is answered 503 "
                                            "(default 15)", flag="--request-timeout", type=float)
    # waitress worker threads; None: pool size + 2
    http_threads: int | None = option(None, "HTTP worker threads (default: workers + 2)", type=int)
    # empty: CORS off
    cors_origins: list[str] = option(help="allow browser pages from ORIGIN (repeatable; default: CORS off)", flag="--cors-origin",
                                     action="append", metavar="ORIGIN", default_factory=list)
    # one JSON line per request on stderr
    access_log: bool = option(True, "no JSON access log lines on stderr", flag="--no-access-log", action="store_false")
    service: ServiceOptions = field(default_factory=ServiceOptions)
    # Supervised worker processes (supervisor.py); None: the device profile's [serve] processes, else 1.
    # 1: one process, no supervisor.
    processes: int | None = option(None, "worker processes under a supervisor that replaces one that dies or outgrows its memory "
                                         "(default: the device profile's processes, else 1: one process, no supervisor)", type=int)
    # A worker is replaced after this many requests (+ up to 10% so they do not all go at once); 0: never.
    max_requests: int = option(10_000, "replace a worker after this many requests (0: never; with --processes 2 or more)", type=int)
    # A worker's memory: its request budget and its hard limit (RLIMIT_DATA) come from it. None: the memory
    # limit, less the supervisor, shared equally between the workers.
    worker_memory: int | None = option(None, "a worker's hard memory limit, enforced by RLIMIT_DATA and, where one can be made, "
                                             "a memory cgroup of its own (default: the memory limit shared between the workers)",
                                       flag="--worker-memory-mb", type=megabytes)
    # RSS above which an idle worker is replaced; None: its start-up RSS plus half its request budget.
    recycle_rss: int | None = option(None, "replace a worker whose RSS stays above this with nothing in flight "
                                           "(default: its RSS at start plus half its request budget)", flag="--recycle-rss-mb",
                                     type=megabytes)
    # Connection guards for waitress (http_server.py): a request's headers must arrive within
    # header_timeout_s, and the whole request within body_timeout_s; an idle keep-alive connection
    # is closed after idle_timeout_s.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 15.0
    # Memory bounds of the HTTP layer (http_server.py), one table: what every connection and every body in
    # flight may hold, so that connections x buffers + bodies fit the memory budget.
    # At most this many connections; lowered at start until their buffers fit `connection_share` of the
    # request budget (a stalled connection holds its header and in-memory body until it times out).
    connection_limit: int = 1000
    # The buffers of all connections may take this share of the request budget: the rest stays for requests.
    connection_share: float = 0.25
    # Request line + headers: Node.js's default (16 KiB) and nginx's 8 KiB a line; curl sends ~80 bytes,
    # python-requests ~200, a browser with cookies a few KiB. waitress's own 256 KiB let 1,000 stalled
    # connections hold 200 kB each (+502 MB).
    max_header_bytes: int = 16 * 1024
    # A body up to this size stays in memory; past it waitress spools it to a temp file. 64 KiB keeps a
    # small camera JPEG off the disk while 1,000 connections x 64 KiB stays 64 MiB at most.
    body_in_memory_bytes: int = 64 * 1024
    # A larger body, up to body_pool_each_bytes, stays in memory too while all such bodies at once fit this
    # share of the request budget (set aside from it, like the connections' buffers); past it, spooled. A
    # ~100 kB camera JPEG spooled cost ~0.55 ms of CPU a request, a sixth of the whole HTTP path.
    body_pool_share: float = 0.0625
    body_pool_each_bytes: int = 1024 * 1024
    # Bytes of bodies spooled to temp files at once (their Content-Length, counted from the headers): past
    # it a body is refused 503 before a byte is written. Four of the largest bodies: 50 bodies of 20 MiB
    # with the last byte held back otherwise spooled 1.05 GB. None: 4 x max_body_bytes.
    spool_bytes: int | None = None
