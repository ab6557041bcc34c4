"""Helpers shared by the tests/test_server_*.py files (not a test module)."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

from conftest import http


def first_image(heldout_dir: Path, label: str = "circle", i: int = 0) -> Path:
    return sorted((heldout_dir / label).glob("*.jpg"))[i]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post_json(url: str, body, headers: dict | None = None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http("POST", url, data, {"Content-Type": "application/json", **(headers or {})})


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with no pixel data: a decompression-bomb probe."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def assert_json_error(status, body, headers, expected_status: int, *words: str):
    assert status == expected_status, (status, body)
    assert headers["Content-Type"].startswith("application/json"), headers["Content-Type"]
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    for w in words:
        assert w.lower() in body["error"].lower(), (w, body["error"])
