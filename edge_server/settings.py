"""Server settings: one dataclass, filled by the CLI (and a device profile), read by the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_core.service import ServiceOptions


@dataclass
class ServerSettings:
    bundle: Path
    labels: Path | None = None
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8080
    api_key: str | None = None  # None: no key needed, and the admin endpoints are off
    max_body_bytes: int = 20 * 1024 * 1024
    http_threads: int | None = None  # waitress worker threads; None: pool size + 2
    cors_origins: list[str] = field(default_factory=list)  # empty: CORS off
    access_log: bool = True  # one JSON line per request on stderr
    service: ServiceOptions = field(default_factory=ServiceOptions)
    device: str | None = None
    # Memory the server may use (bytes); None: the cgroup limit, the device profile's memory_max, or half
    # the RAM, whichever is tightest (budget.process_limit). Requests are admitted against it minus the
    # memory in use at start-up.
    memory_limit: int | None = None
    memory_source: str = ""
    # A request's whole time in the app (decode, wait for an instance, inference); past it: 503.
    request_timeout_s: float = 15.0
    # Connection guards for waitress (http_server.py): a request's headers must arrive within
    # header_timeout_s, and the whole request within body_timeout_s; an idle keep-alive connection
    # is closed after idle_timeout_s.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 15.0
    connection_limit: int = 1000
