"""The listening sockets, bound before the model loads: a taken port is one line, before any "ready".

waitress binds only when its server is made, after the model has loaded, warmed and
been announced, so a busy port would show as a traceback after the "ready" line. Here
the sockets are bound and listening first (so a second server starting at the same
moment cannot take the port between the check and the start), and handed to waitress
(`sockets=`). Connections made while the model loads wait in the listen backlog.
"""

from __future__ import annotations

import errno
import json
import socket
import urllib.request

from edge_core.errors import EdgeError

# errno of a failed bind -> what the error line says the port or address is
BIND_FAILURES = {
    errno.EADDRINUSE: "in use by another program",
    errno.EACCES: "not allowed (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
    errno.EADDRNOTAVAIL: "not an address of this machine",
}
# A wildcard address is probed on the loopback of its family.
PROBE_HOSTS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
PROBE_PATH = "/v2/health/live"  # public even when the other server has an API key
BACKLOG = 2048  # waitress's default


def _url(host: str, port: int, path: str = "") -> str:
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"


def probe_edgeport(host: str, port: int, timeout: float = 1.0) -> str | None:
    """The URL of an edgeport server answering on host:port, or None (nothing answers, or not edgeport).

    edgeport's waitress names itself in the Server header; GET /v2 adds the version when the
    other server has no API key."""
    host = PROBE_HOSTS.get(host, host)
    try:
        with urllib.request.urlopen(_url(host, port, PROBE_PATH), timeout=timeout) as r:
            if not r.headers.get("Server", "").startswith("edgeport"):
                return None
    except (OSError, ValueError):
        return None
    try:
        with urllib.request.urlopen(_url(host, port, "/v2"), timeout=timeout) as r:
            version = json.load(r).get("version")
    except (OSError, ValueError):
        version = None
    return _url(host, port) + (f" (edgeport {version})" if version else "")


def bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to host:port and listening (one per address the host resolves to), or an EdgeError."""
    if not 0 <= port <= 65535:
        raise EdgeError(f"Expected --port in 0-65535. Received: {port}")
    try:
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise EdgeError(f"Expected --host as an IP address or a name this machine resolves. Received: {host!r} ({e.strerror})") from None
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, socktype, proto, _, addr in infos:
            if (family, addr[:2]) in seen:  # getaddrinfo may repeat an address
                continue
            seen.add((family, addr[:2]))
            addr = (addr[0], port, *addr[2:])  # with --port 0, the port the kernel picked for the first address
            sock = socket.socket(family, socktype, proto)
            sockets.append(sock)
            # As waitress does: restart at once over connections in TIME_WAIT; IPv6 sockets IPv6 only.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
                sock.listen(BACKLOG)
            except OSError as e:
                raise EdgeError(_bind_error(host, port, e)) from None
            port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_error(host: str, port: int, e: OSError) -> str:
    if e.errno == errno.EADDRNOTAVAIL:
        return f"Expected --host to be an address of this machine. Received: {host!r} ({BIND_FAILURES[e.errno]})"
    reason = BIND_FAILURES.get(e.errno, e.strerror or str(e))
    if e.errno == errno.EADDRINUSE:
        other = probe_edgeport(host, port)
        if other:
            reason = f"in use by another edgeport server at {other}"
    return f"Expected port {port} on {host} to be free. Received: {reason}; stop it or choose another --port"
