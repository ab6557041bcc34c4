"""waitress, guarded against slow, idle and malformed clients.

waitress reads sockets on one asyncore thread, so a slow client does not hold a
worker thread; what it lacked (measured against `edgeport serve`, waitress 3.0.2):

- a deadline for a request to *arrive*: a client sending one header byte a second
  is never idle, so `channel_timeout` never closes it, and 300 of them filled the
  256 connection slots: 0 of 9 valid requests answered in 40 s. Here the server's
  maintenance pass (every `cleanup_interval` s) closes a connection whose headers
  are not complete after `header_timeout_s`, or whose body is not after
  `body_timeout_s`; the idle keep-alive timeout is 15 s; and the
  connection limit is 1000, with poll() instead of select() so that
  descriptors above 1024 work.
- `Expect: 100-continue` with a Content-Length over the limit: waitress sets the
  413 error but then still sends "100 Continue" and reads the body. Here the
  continue is withheld: 413, then the connection closes.
- Content-Length together with Transfer-Encoding: waitress let chunked win and
  kept the connection. Both at once is how requests are smuggled past proxies
  (RFC 9112 6.1 says a server may reject it and must close): 400 and close.
- its own error answers are text/plain; here they are JSON like the app's.

Oversized bodies: with max_request_body_size set to the app's own limit, waitress
refuses from the Content-Length header, before a byte of the body is buffered.
A client still sending that body would then meet a closed socket, and the
kernel's reset can destroy the 413 before the client reads it; so after an
error answer the connection lingers (as nginx's lingering_close): the write
side is shut, whatever still arrives is read and dropped (never buffered) for
at most LINGER_S seconds, then the socket closes.
"""

from __future__ import annotations

import json
import resource
import socket
import time
import types

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask

from .settings import ServerSettings

# What a client was expected to send, per waitress error class: the JSON answer names it.
EXPECTED = {
    "RequestEntityTooLarge": "a request body of at most {max_body:,} bytes",
    "RequestHeaderFieldsTooLarge": "request headers of at most {max_header:,} bytes",
    "BadRequest": "a well-formed HTTP/1.1 request",
    "ServerNotImplemented": "Transfer-Encoding chunked or none",
}


class GuardedParser(HTTPRequestParser):
    def parse_header(self, header_plus):
        super().parse_header(header_plus)
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            raise ParsingError("Content-Length and Transfer-Encoding together (one body length, please)")

    def received(self, data):
        n = super().received(data)
        if self.error is not None:
            # waitress would still invite the body with "100 Continue" (and then read it): withhold it.
            self.expect_continue = False
        return n


LINGER_S = 3.0


class JsonErrorTask(ErrorTask):
    def execute(self):
        self.channel.error_sent = True
        e = self.request.error
        adj = self.channel.adj
        expected = EXPECTED.get(type(e).__name__, "a valid HTTP request").format(
            max_body=adj.max_request_body_size - 1, max_header=adj.max_request_header_size)
        received = e.body
        if type(e).__name__ == "RequestEntityTooLarge" and self.request.content_length:
            received = f"Content-Length {self.request.content_length:,}"
        body = json.dumps({"error": f"{e.reason}. Expected {expected}. Received: {received}"}).encode()
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class GuardedChannel(HTTPChannel):
    parser_class = GuardedParser
    error_task_class = JsonErrorTask
    request_started: float | None = None  # when the first byte of the request being received arrived
    error_sent = False  # set by JsonErrorTask: the connection lingers before it closes
    lingering_until: float | None = None

    def handle_close(self):
        if self.lingering_until is None and self.error_sent and self.connected:
            try:
                self.socket.shutdown(socket.SHUT_WR)  # the answer is complete; the client sees EOF after it
            except OSError:
                return super().handle_close()
            self.lingering_until = time.time() + LINGER_S
            return
        super().handle_close()

    def readable(self):
        return True if self.lingering_until is not None else super().readable()

    def writable(self):
        return False if self.lingering_until is not None else super().writable()

    def handle_read(self):
        if self.lingering_until is None:
            return super().handle_read()
        try:
            data = self.socket.recv(65536)  # dropped: never buffered
        except OSError:
            data = b""
        if not data or time.time() > self.lingering_until:
            HTTPChannel.handle_close(self)

    def received(self, data):
        if self.request is None and data:
            self.request_started = time.time()
        result = super().received(data)
        if self.request is None:
            self.request_started = None
        return result


def _maintenance(server, now, header_timeout: float, body_timeout: float):
    BaseWSGIServer.maintenance(server, now)  # idle keep-alive connections (channel_timeout)
    for ch in list(server.active_channels.values()):
        if getattr(ch, "lingering_until", None) is not None:
            if now > ch.lingering_until:
                HTTPChannel.handle_close(ch)
            continue
        req, started = ch.request, getattr(ch, "request_started", None)
        if req is None or started is None or ch.requests:  # nothing arriving, or a response is being made
            continue
        limit = body_timeout if req.headers_finished else header_timeout
        if now - started > limit:
            ch.will_close = True  # the next loop closes it (HTTPChannel.writable)


def connection_limit(wanted: int) -> int:
    """Raise the open-file limit as far as allowed, and keep the connection limit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + 64  # model files, logs, the listening socket, temp files of large bodies
    if soft != resource.RLIM_INFINITY and soft < target:
        new = target if hard == resource.RLIM_INFINITY else min(target, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    return max(16, min(wanted, soft - 64)) if soft != resource.RLIM_INFINITY else wanted


def make_server(app, settings: ServerSettings, threads: int, sockets=None):
    """`sockets`: already bound and listening (listen.bind); without them waitress binds host:port itself."""
    where = {"sockets": sockets} if sockets else {"host": settings.host, "port": settings.port}
    server = create_server(
        app, **where, threads=threads, ident="edgeport",
        # >=: waitress refuses a Content-Length equal to its limit, the app accepts its own limit
        max_request_body_size=settings.max_body_bytes + 1,
        channel_timeout=settings.idle_timeout_s, cleanup_interval=1,
        connection_limit=connection_limit(settings.connection_limit), asyncore_use_poll=True,
    )
    listeners = [d for d in getattr(server, "map", {}).values() if isinstance(d, BaseWSGIServer)] or [server]
    for d in listeners:
        d.channel_class = GuardedChannel
        d.maintenance = types.MethodType(
            lambda self, now: _maintenance(self, now, settings.header_timeout_s, settings.body_timeout_s), d)
    return server
