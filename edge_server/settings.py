"""Server settings: one dataclass, filled by the CLI (and a device profile), read by the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .service import ServiceOptions


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
