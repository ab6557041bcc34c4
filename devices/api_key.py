"""Who may call the service: API key files, read and checked the same way by `edgeport deploy` (on the
workstation) and `edgeport serve` (on the device), so a key serve would refuse is refused before it is
shipped; and which addresses are this machine only (beyond them a deploy needs a key)."""

from __future__ import annotations

from pathlib import Path

from . import DeviceError

# The most a key file may hold: a key is a line, not a document (and a wrong path to a big file fails fast).
MAX_BYTES = 4096


def read_api_key(path: Path) -> str:
    """The key in `path` (surrounding whitespace stripped), or a one-line DeviceError."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise DeviceError(f"Expected a readable API key file. Received: {str(path)!r} ({e.strerror})") from None
    if len(data) > MAX_BYTES:
        raise DeviceError(f"Expected an API key file of at most {MAX_BYTES} bytes. Received: {str(path)!r} (larger)")
    try:
        key = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DeviceError(f"Expected an API key as UTF-8 text. Received: binary data in {str(path)!r}") from None
    if not key:
        raise DeviceError(f"Expected an API key in {path}. Received: an empty file")
    if any(c.isspace() or not c.isprintable() for c in key):
        # a key travels in an HTTP header: one token, no spaces or line breaks
        raise DeviceError(f"Expected the API key as one word on one line. Received: whitespace inside the key in {str(path)!r}")
    return key


def is_loopback(host: str) -> bool:
    """True when `host` answers this machine only: 127.0.0.0/8, ::1 or the name localhost."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve to an address others reach
