"""Soak: a bounded mix of valid and hostile requests, with one hot reload mid-run.

    python benchmarks/soak.py BUNDLE [--seconds 60] [--clients 16]

Starts `edgeport serve BUNDLE` on 127.0.0.1 (with a throwaway API key, so the
admin reload is on), drives it with N client threads for a fixed time, sends
one POST /admin/reload halfway, and reports: requests served, responses by
status per request kind (only each kind's expected statuses are allowed), p99
latency of the valid requests, resident memory and open file descriptors
before and after (goal: growth at most 10%). Exit status 1 if any rule broke.
Traffic goes to 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

from serverproc import free_port, memory_kb, stop, wait_ready


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header that says width x height (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def request_kinds(image: bytes, name: str, size: int, max_body: int) -> list[tuple]:
    """(kind, method, path, body, headers, allowed statuses). Every bad input the server must refuse."""
    jpeg = {"Content-Type": "image/jpeg"}
    js = {"Content-Type": "application/json"}
    pixels = [[[[0, 0, 0]] * size] * size]
    return [
        ("predict", "POST", "/predict?top_k=3", image, jpeg, {200}),
        ("tfserving b64", "POST", f"/v1/models/{name}:predict",
         json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode(), js, {200}),
        ("v2 uint8", "POST", f"/v2/models/{name}/infer",
         json.dumps({"inputs": [{"name": "image", "shape": [1, size, size, 3], "datatype": "UINT8",
                                 "data": [0] * (size * size * 3)}]}).encode(), js, {200}),
        ("metrics", "GET", "/metrics", None, {}, {200}),
        ("empty body", "POST", "/predict", b"", jpeg, {400}),
        ("truncated jpeg", "POST", "/predict", image[: len(image) // 2], jpeg, {400}),
        ("text file", "POST", "/predict", b"hello, I am not an image\n" * 10, {"Content-Type": "application/octet-stream"}, {415}),
        ("png bomb header", "POST", "/predict", png_claiming(40000, 40000), {"Content-Type": "image/png"}, {413}),
        ("malformed json", "POST", f"/v1/models/{name}:predict", b'{"instances": [', js, {400}),
        ("wrong tensor shape", "POST", f"/v1/models/{name}:predict", json.dumps({"instances": [[[1, 2, 3]]]}).encode(), js, {400}),
        ("wrong dtype", "POST", f"/v2/models/{name}/infer",
         json.dumps({"inputs": [{"name": "image", "shape": [1, size, size, 3], "datatype": "INT64",
                                 "data": [0] * (size * size * 3)}]}).encode(), js, {400}),
        ("unknown model", "POST", "/v1/models/nope:predict", json.dumps({"instances": pixels}).encode(), js, {404}),
        ("oversized body", "POST", "/predict", b"\xff" * (max_body + 1024), jpeg, {413}),
        ("no api key reload", "POST", "/admin/reload", b"", {}, {401, 403}),
    ]


def rss_kb(pid: int) -> int:
    return memory_kb(pid, "VmRSS").get("VmRSS", 0)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def call(port: int, method: str, path: str, body, headers) -> tuple[int, float]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    except (ConnectionError, http.client.HTTPException, OSError):
        status = -1  # the server closed on us: counted, and a failure unless allowed
    finally:
        conn.close()
    return status, (time.perf_counter() - t) * 1e3


def soak(bundle: Path, seconds: float = 60.0, clients: int = 16, image: Path | None = None, max_body_mb: float = 2.0,
         log=print) -> dict:
    meta = json.loads((Path(bundle) / "bundle.json").read_text())
    name, size = meta["name"], int(meta["input"]["shape"][1])
    if image is None:
        from PIL import Image
        import io

        buf = io.BytesIO()
        Image.new("RGB", (640, 480), (40, 120, 200)).save(buf, "JPEG", quality=90)
        image_bytes = buf.getvalue()
    else:
        image_bytes = Path(image).read_bytes()
    max_body = int(max_body_mb * 1024 * 1024)
    kinds = request_kinds(image_bytes, name, size, max_body)

    tmp = Path(tempfile.mkdtemp(prefix="edgeport-soak-"))
    key_file = tmp / "key"
    key = base64.urlsafe_b64encode(os.urandom(24)).decode()
    key_file.write_text(key)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_server.cli", "serve", str(bundle), "--port", str(port), "--api-key-file", str(key_file),
         "--max-body-mb", str(max_body_mb), "--no-access-log"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "wb"),
    )
    auth = {"X-API-Key": key}
    try:
        try:
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc, 60)
        except RuntimeError as e:
            raise RuntimeError(f"{e}: {(tmp / 'server.log').read_text()[-2000:]}") from None
        for _ in range(20):  # warm every path once before the "before" reading
            for kind in kinds[:4]:
                call(port, kind[1], kind[2], kind[3], {**kind[4], **auth})
        before = {"rss_kb": rss_kb(proc.pid), "fds": open_fds(proc.pid)}

        statuses: dict[str, Counter] = defaultdict(Counter)
        latencies: list[float] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        def client(i: int) -> None:
            rng = random.Random(i)
            while time.monotonic() < stop_at:
                kind, method, path, body, headers, _ = rng.choice(kinds)
                headers = dict(headers) if kind == "no api key reload" else {**headers, **auth}
                status, ms = call(port, method, path, body, headers)
                with lock:
                    statuses[kind][status] += 1
                    if kind in ("predict", "tfserving b64", "v2 uint8") and status == 200:
                        latencies.append(ms)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        time.sleep(seconds / 2)
        reload_status, reload_ms = call(port, "POST", "/admin/reload", b"", auth)
        for t in threads:
            t.join()
        time.sleep(0.5)
        after = {"rss_kb": rss_kb(proc.pid), "fds": open_fds(proc.pid)}
    finally:
        stop(proc)

    allowed = {k[0]: k[5] for k in kinds}
    unexpected = {k: {s: n for s, n in c.items() if s not in allowed[k]} for k, c in statuses.items()}
    unexpected = {k: v for k, v in unexpected.items() if v}
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    served = sum(sum(c.values()) for c in statuses.values())
    growth = {k: after[k] / before[k] for k in before}
    result = {
        "seconds": seconds, "clients": clients, "requests": served, "requests_per_s": served / seconds,
        "by_kind": {k: dict(c) for k, c in sorted(statuses.items())}, "unexpected": unexpected,
        "valid_p99_ms": p99, "reload": {"status": reload_status, "ms": reload_ms},
        "before": before, "after": after, "growth": growth,
        "ok": not unexpected and reload_status == 200 and all(g <= 1.10 for g in growth.values()),
    }
    log(f"soak: {served} requests in {seconds:.0f} s from {clients} clients ({served / seconds:.0f}/s); "
        f"hot reload mid-run -> {reload_status} in {reload_ms:.0f} ms")
    for k, c in sorted(statuses.items()):
        log(f"  {k:<20} {dict(sorted(c.items()))}   allowed {sorted(allowed[k])}")
    log(f"valid requests p99: {p99:.1f} ms")
    log(f"RSS {before['rss_kb'] / 1024:.1f} -> {after['rss_kb'] / 1024:.1f} MB ({growth['rss_kb']:.3f}x); "
        f"open fds {before['fds']} -> {after['fds']} ({growth['fds']:.3f}x); goal <= 1.10x")
    log("unexpected statuses: " + (json.dumps(unexpected) if unexpected else "none"))
    log("SOAK OK" if result["ok"] else "SOAK FAILED")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--image", type=Path, help="a JPEG to send (default: a generated 640x480 JPEG)")
    args = ap.parse_args()
    return 0 if soak(args.bundle, args.seconds, args.clients, args.image)["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
