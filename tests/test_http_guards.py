"""The HTTP layer under slow, idle and malformed clients (edge_server/http_server.py), on a model-less app.

Each test talks raw sockets to a guarded waitress on 127.0.0.1 with short timeouts,
so the whole file runs in a few seconds and needs no trained model.
"""

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from edge_server.http_server import make_server
from edge_server.settings import ServerSettings

MAX_BODY = 1000


def app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    out = json.dumps({"got": len(body)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


@pytest.fixture(scope="module")
def guarded():
    settings = ServerSettings(bundle=Path("unused"), port=0, max_body_bytes=MAX_BODY,
                              header_timeout_s=1.0, body_timeout_s=2.0, idle_timeout_s=1.0, connection_limit=1000)
    server = make_server(app, settings, threads=2)
    threading.Thread(target=server.run, daemon=True).start()
    yield ("127.0.0.1", server.effective_port)
    server.close()


def talk(addr, data: bytes, wait: float = 2.0) -> bytes:
    with socket.create_connection(addr, timeout=wait) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def response(s: socket.socket) -> bytes:
    """One whole response: headers, then Content-Length bytes of body (recv may return less)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")), 0)
    while len(body) < length and (chunk := s.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def closed_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        while s.recv(4096):
            pass
        return True  # EOF: the server closed it
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def valid(addr) -> bool:
    reply = talk(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait=3)
    return reply.startswith(b"HTTP/1.1 200")


def test_a_valid_request_is_answered(guarded):
    assert valid(guarded)


def test_oversized_content_length_is_refused_from_the_header_as_json(guarded):
    with socket.create_connection(guarded, timeout=3) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")  # no body sent at all
        reply = response(s)
        assert reply.startswith(b"HTTP/1.1 413"), reply
        body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        assert "Expected a request body of at most 1,000 bytes" in body["error"] and "50,000,000" in body["error"]
        assert closed_within(s, 2)


def test_expect_continue_with_an_oversized_length_is_not_invited(guarded):
    reply = talk(guarded, b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
    assert b"100 Continue" not in reply and reply.startswith(b"HTTP/1.1 413"), reply


def test_expect_continue_within_the_limit_still_works(guarded):
    with socket.create_connection(guarded, timeout=3) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(b"0123456789")
        assert b'{"got": 10}' in response(s)


def test_content_length_with_transfer_encoding_is_400_and_closes(guarded):
    with socket.create_connection(guarded, timeout=3) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n")
        reply = response(s)
        assert reply.startswith(b"HTTP/1.1 400"), reply
        assert "Content-Length and Transfer-Encoding" in json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]
        assert closed_within(s, 2)


def test_slowloris_headers_are_cut_off_at_the_header_deadline(guarded):
    with socket.create_connection(guarded, timeout=5) as s:
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\n")
        closed = False
        for _ in range(8):  # one header byte every 0.5 s: never idle, never finished
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.5)
        closed = closed or closed_within(s, 1)
        assert closed and time.monotonic() - t0 < 4.5


def test_a_slow_body_is_cut_off_at_the_body_deadline(guarded):
    with socket.create_connection(guarded, timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n")
        t0 = time.monotonic()
        closed = False
        for _ in range(12):
            try:
                s.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.4)
        assert (closed or closed_within(s, 1)) and time.monotonic() - t0 < 5


def test_idle_keep_alive_is_closed(guarded):
    with socket.create_connection(guarded, timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response(s).startswith(b"HTTP/1.1 200")
        assert closed_within(s, 3.5)  # idle timeout 1 s + maintenance every 1 s


def test_hundreds_of_slow_and_idle_connections_do_not_lock_out_a_valid_client(guarded):
    """The issue's lockout: 300 slowloris or idle connections answered 0 of 9 valid requests in 40 s."""
    held = []
    try:
        for i in range(300):
            s = socket.create_connection(guarded, timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"G")  # half trickling headers, half idle
            held.append(s)
        t0 = time.monotonic()
        answered = sum(valid(guarded) for _ in range(9))
        assert answered == 9 and time.monotonic() - t0 < 5, answered
    finally:
        for s in held:
            s.close()


def test_a_client_still_sending_an_oversized_body_reads_the_413(guarded):
    """Refused from the header, the body is not buffered, but the answer must reach a client that sends it anyway."""
    with socket.create_connection(guarded, timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n")
        try:
            s.sendall(b"\0" * 3_000_000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = response(s)
        assert reply.startswith(b"HTTP/1.1 413"), reply
