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

Memory of the HTTP layer (the bounds are one table in settings.py):
- each connection holds at most its request line and headers (max_header_bytes)
  and the part of a body kept in memory (body_in_memory_bytes); the connection
  limit is lowered at start until limit x that fits `connection_share` of the
  request budget, and that much is set aside from the budget (fit_connections);
- a body past body_in_memory_bytes with a Content-Length of at most
  body_pool_each_bytes stays in memory too while all such bodies at once fit
  the body pool (`body_pool_share` of the request budget, set aside from it);
  any other is spooled to a temp file by waitress: a camera photo of ~100 kB
  spooled cost ~0.55 ms of CPU a request (file created, written, read back);
- the bodies spooled at once are counted from their Content-Length when the
  headers end, and one that would pass spool_bytes is refused 503 before a
  byte of it is written (Spool);
- at the connection limit the server still accepts: it closes the connection
  silent longest and has no request in the app (an idle
  keep-alive, slowloris, stalled headers, one lingering after an error), so
  idle or stalled connections cannot lock valid clients out (make_room).
"""

from __future__ import annotations

import json
import resource
import socket
import threading
import time
import types

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask
from waitress.utilities import Error

from .settings import ServerSettings

# What a client was expected to send, per waitress error class: the JSON answer names it.
EXPECTED = {
    "RequestEntityTooLarge": "a request body of at most {max_body:,} bytes",
    "RequestHeaderFieldsTooLarge": "request headers of at most {max_header:,} bytes",
    "BadRequest": "a well-formed HTTP/1.1 request",
    "ServerNotImplemented": "Transfer-Encoding chunked or none",
    "SpoolFull": "a request body that fits in the {spool:,} bytes this server spools to disk at once; retry after {retry} s",
}
SPOOL_RETRY_AFTER_S = 2


class SpoolFull(Error):
    code = 503
    reason = "Service Unavailable"


class Spool:
    """Bytes of request bodies held at once (spooled to temp files, or in the in-memory body pool), against
    a limit. Taken on waitress's loop thread when a request's headers end, given back on whichever thread
    closes the request. `each`: the largest single body it takes (the pool's; a spool takes any)."""

    def __init__(self, limit: int, each: int | None = None):
        self.limit = limit
        self.each = limit if each is None else each
        self.used = 0
        self.peak = 0
        self.refused = 0
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        with self._lock:
            if self.used + nbytes > self.limit:
                self.refused += 1
                return False
            self.used += nbytes
            self.peak = max(self.peak, self.used)
            return True

    def give(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


class GuardedParser(HTTPRequestParser):
    def parse_header(self, header_plus):
        super().parse_header(header_plus)
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            raise ParsingError("Content-Length and Transfer-Encoding together (one body length, please)")

    spooled = 0  # bytes of this body counted in the server's Spool
    pooled = 0  # bytes of this body counted in the server's in-memory body pool

    def received(self, data):
        n = super().received(data)
        if self.error is None and self.body_rcv is not None:
            self._count_spool()
        if self.error is not None:
            # waitress would still invite the body with "100 Continue" (and then read it): withhold it.
            self.expect_continue = False
        return n

    def _count_spool(self):
        spool = getattr(self.adj, "spool", None)
        if spool is None:
            return
        overflow = self.adj.inbuf_overflow
        if self.pooled or (not self.chunked and self.content_length > overflow and not self.spooled and self._pool()):
            return
        # Content-Length: the whole body, known when the headers end; chunked: what has arrived past memory.
        want = (max(0, self.body_bytes_received - overflow) if self.chunked
                else self.content_length if self.content_length > overflow else 0)
        extra = want - self.spooled
        if extra <= 0:
            return
        if spool.take(extra):
            self.spooled += extra
            return
        self.error = SpoolFull(f"{self.content_length or self.body_bytes_received:,} bytes of body while "
                               f"{spool.used:,} bytes of other bodies are being spooled")
        self.completed = True

    def _pool(self) -> bool:
        """Keep this body in memory if the pool takes its Content-Length (then it never overflows to a file)."""
        pool = getattr(self.adj, "body_pool", None)
        if pool is None or self.content_length > pool.each or not pool.take(self.content_length):
            return False
        self.pooled = self.content_length
        self.body_rcv.buf.overflow = self.content_length + 1  # OverflowableBuffer: a file only past this
        return True

    def close(self):
        super().close()
        spooled, self.spooled = self.spooled, 0
        if spooled:
            self.adj.spool.give(spooled)
        pooled, self.pooled = self.pooled, 0
        if pooled:
            self.adj.body_pool.give(pooled)


LINGER_S = 3.0


class JsonErrorTask(ErrorTask):
    def execute(self):
        self.channel.error_sent = True
        e = self.request.error
        adj = self.channel.adj
        spool = getattr(adj, "spool", None)
        expected = EXPECTED.get(type(e).__name__, "a valid HTTP request").format(
            max_body=adj.max_request_body_size - 1, max_header=adj.max_request_header_size,
            spool=spool.limit if spool else 0, retry=SPOOL_RETRY_AFTER_S)
        received = e.body
        if type(e).__name__ == "RequestEntityTooLarge" and self.request.content_length:
            received = f"Content-Length {self.request.content_length:,}"
        body = json.dumps({"error": f"{e.reason}. Expected {expected}. Received: {received}"}).encode()
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        if isinstance(e, SpoolFull):
            self.response_headers.append(("Retry-After", str(SPOOL_RETRY_AFTER_S)))
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
        if self.request is not None:  # a request still arriving: its spooled body goes now
            self.request.close()
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

    spoke = False  # it has sent something: once answered and quiet, an idle keep-alive

    def received(self, data):
        if data:
            self.spoke = True
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


# A connection younger than this that has sent nothing is not closed for room: a valid client's request
# arrives within milliseconds of its connection, but the loop accepts before it reads.
GRACE_S = 1.0
ACCEPT_BATCH = 64


def eviction_key(ch, now: float) -> tuple | None:
    """The order in which connections are closed to make room, lowest first; None: never (a request in
    the app, or an answer being written). First those lingering after an error; then idle keep-alives
    (answered, nothing new sent), the longest idle first; then requests still in their headers, then
    those receiving a body, each the longest silent first: stalled headers and slowloris before a body
    upload (under a flood of young stalled connections, a valid upload was as recent as they were, but
    has its headers complete; one silent for GRACE_S is a body trickled slowly). 3, never closed for room:
    connections younger than GRACE_S that have sent nothing yet (closing one with its request unread
    resets it: a valid client's) and bodies that received bytes within GRACE_S (the mix's slowloris flood
    otherwise evicted valid uploads along with the bombs' 19 MiB bodies)."""
    if getattr(ch, "lingering_until", None) is not None:
        return (0, 0.0, 0.0)
    if ch.requests or ch.total_outbufs_len or not ch.connected:
        return None
    req, started = ch.request, getattr(ch, "request_started", None)
    if req is None and getattr(ch, "spoke", False):
        return (1, 0.0, ch.last_activity)
    since = started if req is not None and started is not None else ch.last_activity
    if req is None and now - since < GRACE_S:
        return (3, 0.0, since)
    if req is not None and req.headers_finished and now - ch.last_activity < GRACE_S:
        return (3, 0.0, since)  # a body arriving now: an upload in progress
    return (2, int(req is not None and req.headers_finished), ch.last_activity)


def closable(channels: list, now: float, keep=()) -> list:
    """The connections that may be closed for room, in eviction_key order. A young one that has sent nothing
    is never among them: accepting stops instead until it has spoken or aged."""
    keys = sorted((k, i) for i, ch in enumerate(channels) if ch not in keep and (k := eviction_key(ch, now)) is not None and k[0] < 3)
    return [channels[i] for _, i in keys]


def make_room(channels: list, limit: int, keep=()) -> None:
    """Close connections (eviction_key order) while more than `limit` are open and one may be closed."""
    excess = len(channels) - limit
    if excess <= 0:
        return
    for ch in closable(channels, time.time(), keep)[:excess]:
        if getattr(ch, "lingering_until", None) is not None:
            HTTPChannel.handle_close(ch)
        else:
            ch.handle_close()


def open_channels(listeners: list) -> list:
    return [ch for d in listeners for ch in list(d.active_channels.values())]


def accept_beyond_the_limit(d, listeners: list, limit: int) -> None:
    """The listener stays readable at the connection limit while some connection may be closed for room,
    and closes one for each connection it accepts past the limit (waitress's own limit stops accepting:
    1,000 stalled or idle connections then lock every valid client out)."""
    def readable():
        now = time.time()
        if now >= d.next_channel_cleanup:
            d.next_channel_cleanup = now + d.adj.cleanup_interval
            d.maintenance(now)
        return d.accepting and room() > 0

    def room() -> int:
        """Connections that may be accepted now: free slots plus those that may be closed for them."""
        # Counted first: readable() runs on every pass of the loop, and the list of connections (sorted
        # for eviction) is needed only at the limit.
        free = limit - sum(len(listener.active_channels) for listener in listeners)
        return free if free > 0 else free + len(closable(open_channels(listeners), time.time()))

    def handle_accept():
        # Up to ACCEPT_BATCH at a time (never more than there is room for), then one eviction pass: one
        # connection per loop pass (waitress) made a flood of reconnecting attackers a queue of seconds in
        # front of a valid client.
        before = set(d.active_channels)
        for _ in range(max(1, min(ACCEPT_BATCH, room()))):
            n = len(d.active_channels)
            type(d).handle_accept(d)
            if len(d.active_channels) == n:  # nothing more waiting (or a failed accept)
                break
        new = [d.active_channels[fd] for fd in set(d.active_channels) - before]
        make_room(open_channels(listeners), limit, keep=set(new))

    d.readable = readable
    d.handle_accept = handle_accept


def connection_bytes(settings: ServerSettings) -> int:
    """The most one connection's buffers hold: the headers twice (waitress keeps the raw bytes and the
    parsed dict), the in-memory part of a body, one recv() and the channel's own objects."""
    return 2 * settings.max_header_bytes + settings.body_in_memory_bytes + RECV_BYTES + CHANNEL_BYTES


RECV_BYTES = 8192  # waitress's recv_bytes
CHANNEL_BYTES = 8192  # channel, parser, socket and dict objects of one connection (CPython 3.11)
MIN_CONNECTIONS = 16


def fit_connections(settings: ServerSettings, budget=None) -> tuple[int, str]:
    """The connection limit whose buffers fit `connection_share` of the request budget (set aside from it),
    and a line saying so."""
    wanted = connection_limit(settings.connection_limit)
    per = connection_bytes(settings)
    if budget is None:
        return wanted, f"at most {wanted} connections"
    room = int(budget.total * settings.connection_share)
    limit = max(MIN_CONNECTIONS, min(wanted, room // per))
    budget.set_aside(limit * per, f"{limit} connections")
    lowered = f" (lowered from {wanted}: {per // 1024} KiB each must fit {settings.connection_share:.0%} of the budget)" \
        if limit < wanted else ""
    return limit, f"at most {limit} connections{lowered}, up to {per // 1024} KiB of buffers each"


POOL_WITHOUT_BUDGET = 16 << 20
# More uploads at once than a 2-6 core board decodes in a second: a workstation's budget need not lend more.
POOL_BODIES = 64


def fit_body_pool(settings: ServerSettings, budget=None) -> Spool:
    """The in-memory body pool: `body_pool_share` of the request budget (at most POOL_BODIES bodies of the
    largest size it keeps), set aside from it."""
    size = POOL_WITHOUT_BUDGET if budget is None else int(budget.total * settings.body_pool_share)
    size = min(size, POOL_BODIES * settings.body_pool_each_bytes)
    if budget is not None and size:
        size = budget.set_aside(size, "bodies kept in memory")
    return Spool(size, each=min(size, settings.body_pool_each_bytes))


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


def make_server(app, settings: ServerSettings, threads: int, sockets=None, budget=None):
    """`sockets`: already bound and listening (listen.bind); without them waitress binds host:port itself.
    `budget`: the app's memory budget, from which the connections' buffers are set aside. The bounds
    in effect are on `server.edgeport_bounds` (one line, for the start-up text)."""
    where = {"sockets": sockets} if sockets else {"host": settings.host, "port": settings.port}
    limit, connections = fit_connections(settings, budget)
    body_pool = fit_body_pool(settings, budget)
    spool = Spool(settings.spool_bytes if settings.spool_bytes is not None else 4 * settings.max_body_bytes)
    server = create_server(
        app, **where, threads=threads, ident="edgeport",
        # >=: waitress refuses a Content-Length equal to its limit, the app accepts its own limit
        max_request_body_size=settings.max_body_bytes + 1,
        max_request_header_size=settings.max_header_bytes, inbuf_overflow=settings.body_in_memory_bytes,
        recv_bytes=RECV_BYTES, channel_timeout=settings.idle_timeout_s, cleanup_interval=1,
        connection_limit=limit, asyncore_use_poll=True,
    )
    listeners = [d for d in getattr(server, "map", {}).values() if isinstance(d, BaseWSGIServer)] or [server]
    for d in listeners:
        d.adj.spool = spool  # the parsers reach both through their listener's adj
        d.adj.body_pool = body_pool
        d.channel_class = GuardedChannel
        d.maintenance = types.MethodType(
            lambda self, now: _maintenance(self, now, settings.header_timeout_s, settings.body_timeout_s), d)
        accept_beyond_the_limit(d, listeners, limit)
    server.edgeport_bounds = (f"{connections}; headers up to {settings.max_header_bytes // 1024} KiB; bodies past "
                              f"{settings.body_in_memory_bytes // 1024} KiB kept in memory up to {body_pool.each // 1024} KiB each "
                              f"while {body_pool.limit / MiB:.1f} MiB hold them, else spooled to disk, at most "
                              f"{spool.limit // MiB} MiB at once")
    return server


MiB = 1 << 20
