"""Attack: a hostile mix beside valid traffic, with the server under a memory cap.

    python benchmarks/attack.py BUNDLE [--images DIR] [--seconds 60 | --quick] [--cap 600M --cap 256M] [--json]

For each cap, starts `edgeport serve BUNDLE --device raspberry-pi-4` on
127.0.0.1 inside a new memory cgroup (v2 `memory.max`, else v1
`memory.limit_in_bytes`) with that cap; if no cgroup is writable it says so and
runs without a cap (then "OOM kills" means nothing). A killed server is
restarted, as systemd would, and counted. For a bounded time, valid clients
send real JPEGs (small ones and a 12 Mpx one) while attackers send: 19 MiB JSON
bodies of empty lists (v1 and v2), a lossless WebP claiming 6000x6000, a 40 Mpx
PNG, 16 Mpx RGBA PNGs, a batch of 32 12 Mpx PNGs in one request, a progressive
JPEG with 5,000 scans, a 5,000-digit integer, a JPEG cut short with an EOI,
oversized Content-Length (plain and with Expect: 100-continue), Content-Length
with Transfer-Encoding, 300 slowloris and 300 idle keep-alive connections.

Printed per cap: OOM kills (goal 0), the share of valid requests answered
correctly (200 and the top-1 label the server gave before the attack; goal
>= 99%), their p50/p99 during the attack, the server's RSS before / peak /
after (5 s after the attack), and every attack kind's statuses. Exit status 1
if a goal is missed. Everything goes to 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from serverproc import free_port, memory_kb, stop, wait_ready

MiB = 1 << 20


# --- cgroups ---------------------------------------------------------------------------------------

class Cgroup:
    """A child memory cgroup of our own, with a cap; `add` is run in the child process before exec."""

    def __init__(self, path: Path, version: int, cap: int):
        self.path, self.version, self.cap = path, version, cap

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def oom_kills(self) -> int:
        try:
            name = "memory.events" if self.version == 2 else "memory.oom_control"
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def peak(self) -> int | None:
        for name in ("memory.peak", "memory.max_usage_in_bytes"):
            try:
                return int((self.path / name).read_text())
            except (OSError, ValueError):
                continue
        return None

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def make_cgroup(cap: int) -> tuple[Cgroup | None, str]:
    """(cgroup, "") or (None, why not)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError as e:
        return None, f"no /proc/self/cgroup ({e.strerror})"
    name = f"edgeport-attack-{os.getpid()}-{cap >> 20}M"
    errors = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            path, version, files = Path("/sys/fs/cgroup") / rel.lstrip("/") / name, 2, {"memory.max": cap, "memory.swap.max": 0}
        elif "memory" in controllers.split(","):
            path, version, files = Path("/sys/fs/cgroup/memory") / rel.lstrip("/") / name, 1, {"memory.limit_in_bytes": cap}
        else:
            continue
        try:
            path.mkdir()
        except OSError as e:
            errors.append(f"cgroup v{version} {path.parent}: {e.strerror}")
            continue
        try:
            for fname, value in files.items():
                f = path / fname
                if f.exists() or fname != "memory.swap.max":
                    f.write_text(str(value))
            return Cgroup(path, version, cap), ""
        except OSError as e:
            errors.append(f"cgroup v{version} {path}: {e.strerror}")
            try:
                path.rmdir()
            except OSError:
                pass
    return None, "; ".join(errors) or "no memory cgroup controller"


def cgroup_support() -> tuple[bool, str]:
    """Whether this machine lets us cap a process's memory (for the test suite's skip)."""
    cg, why = make_cgroup(64 * MiB)
    if cg is None:
        return False, why
    cg.remove()
    return True, ""


# --- payloads --------------------------------------------------------------------------------------

def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(1, h // 64), max(1, w // 64), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BILINEAR)


def scan_bomb(scans: int) -> bytes:
    """A progressive JPEG whose smallest scan repeats until it has `scans` scans: each costs libjpeg a pass
    over the whole image. 2000x1500 with 5,000 scans: 8.8 MB, 5.2 s of CPU to decode (unchecked)."""
    data = encode(photo(2000, 1500, 3), "JPEG", progressive=True, quality=95)
    starts, pos = [], 0
    while (pos := data.find(b"\xff\xda", pos)) >= 0:
        starts.append(pos)
        pos += 2
    eoi = data.rfind(b"\xff\xd9")
    pieces = [data[a:b] for a, b in zip(starts, starts[1:] + [eoi])]
    scan = min(pieces, key=len)
    return data[:eoi] + scan * (scans - len(starts)) + data[eoi:]


def payloads(name: str, size: int, max_body: int) -> dict:
    """kind -> (method, path, body, headers, allowed statuses). Raw-socket kinds are handled apart."""
    js = {"Content-Type": "application/json"}
    flat = Image.new("RGB", (4000, 3000), (90, 140, 200))
    png12 = encode(flat, "PNG")
    batch = json.dumps({"instances": [{"b64": base64.b64encode(png12).decode()}] * 32}).encode()
    empties = b"[]," * 6_500_000
    bomb_v1 = b'{"instances": [[' + empties[:-1] + b"]]}"
    bomb_v2 = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [' + empties[:-1] + b"]}]}"
    whole = encode(photo(640, 480, 5), "JPEG", quality=90)
    busy = {200, 413, 503}  # big but legal: answered, or refused for memory (413 never fits, 503 not now)
    kinds = {
        "json empty-list bomb v1": ("POST", f"/v1/models/{name}:predict", bomb_v1, js, {413, 503}),
        "json empty-list bomb v2": ("POST", f"/v2/models/{name}/infer", bomb_v2, js, {413, 503}),
        "webp 6000x6000 lossless": ("POST", "/predict", encode(Image.new("RGB", (6000, 6000)), "WEBP", lossless=True),
                                    {"Content-Type": "image/webp"}, {413}),
        "png 40 Mpx": ("POST", "/predict", encode(Image.new("RGB", (7300, 5480), (10, 20, 30)), "PNG"), {"Content-Type": "image/png"}, {413}),
        "png 16 Mpx RGBA": ("POST", "/predict", encode(Image.new("RGBA", (4000, 4000), (1, 2, 3, 4)), "PNG"),
                            {"Content-Type": "image/png"}, busy),
        "32 x 12 Mpx png batch": ("POST", f"/v1/models/{name}:predict", batch, js, busy),
        "progressive 5000 scans": ("POST", "/predict", scan_bomb(5000), {"Content-Type": "image/jpeg"}, {400}),
        "5000-digit integer": ("POST", f"/v1/models/{name}:predict", b'{"instances": [' + b"9" * 5000 + b"]}", js, {400}),
        "jpeg cut short + EOI": ("POST", "/predict", whole[: len(whole) // 2] + b"\xff\xd9", {"Content-Type": "image/jpeg"}, {400}),
    }
    # Every body is reserved against the memory budget (its Content-Length) before the app reads it, so
    # while other requests hold the memory any of these may be told 503 + Retry-After before its fault is
    # seen: the design's "busy, try again", not a failure. What stays unexpected: 500, resets, timeouts.
    return {k: (m, path, body, h, allowed | {503}) for k, (m, path, body, h, allowed) in kinds.items()}


RAW = {  # raw-socket attacks: request bytes -> the status line's code expected
    "oversized Content-Length": (lambda mb: f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {mb * 5}\r\n\r\n".encode(), {413}),
    "Expect 100-continue oversized": (lambda mb: f"POST /predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {mb * 5}\r\n\r\n".encode(), {413}),
    "Content-Length + Transfer-Encoding": (lambda mb: b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n", {400}),
}


# --- the run ---------------------------------------------------------------------------------------

class Server:
    def __init__(self, bundle: Path, cgroup: Cgroup | None, log: Path):
        self.bundle, self.cgroup, self.log = bundle, cgroup, log
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.exits: list[int] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        procs = str(self.cgroup.procs) if self.cgroup else None

        def enter_cgroup():
            if procs:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_server.cli", "serve", str(self.bundle), "--host", "127.0.0.1", "--port", str(self.port),
             "--device", "raspberry-pi-4", "--no-access-log"],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, preexec_fn=enter_cgroup)
        wait_ready(f"http://127.0.0.1:{self.port}/v2/health/ready", self.proc, timeout=120)

    def watch(self, until: float) -> None:
        """Restart the server if it dies (systemd's Restart=on-failure), recording how it died."""
        while time.monotonic() < until:
            with self.lock:
                code = self.proc.poll()
                if code is not None:
                    self.exits.append(code)
                    try:
                        self.start()
                    except RuntimeError:
                        time.sleep(1)
            time.sleep(0.2)


def call(port: int, method: str, path: str, body: bytes | None, headers: dict, timeout: float = 60) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException) as e:
        return -1, str(e).encode()
    finally:
        conn.close()


def raw(port: int, data: bytes) -> int:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            line = s.recv(4096).split(b"\r\n", 1)[0]
            return int(line.split()[1]) if line.startswith(b"HTTP/") else -1
    except (OSError, ValueError, IndexError):
        return -1


def top1(body: bytes) -> str | None:
    try:
        return json.loads(body)["predictions"][0]["label"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def slow_clients(port: int, until: float, n: int, stats: Counter) -> None:
    """n/2 slowloris (a header byte a second) and n/2 idle keep-alive connections, reopened when closed."""
    socks: list[tuple[str, socket.socket | None]] = [("slowloris" if i % 2 else "idle keep-alive", None) for i in range(n)]
    while time.monotonic() < until:
        for i, (kind, s) in enumerate(socks):
            try:
                if s is None:
                    s = socket.create_connection(("127.0.0.1", port), timeout=2)
                    s.setblocking(False)
                    s.send(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" if kind == "slowloris" else
                           b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                    stats[f"{kind} opened"] += 1
                elif kind == "slowloris":
                    s.send(b"X")
                else:
                    if s.recv(65536) == b"":
                        raise ConnectionResetError
            except BlockingIOError:
                pass
            except OSError:
                stats[f"{kind} closed by server"] += 1
                if s is not None:
                    s.close()
                s = None
            socks[i] = (kind, s)
        time.sleep(1.0)
    for _, s in socks:
        if s is not None:
            s.close()


def run_once(args, cap: int | None) -> dict:
    cgroup, why = make_cgroup(cap) if cap else (None, "no cap asked for")
    label = f"{cap >> 20} MiB cap" if cgroup else f"no cap ({why})"
    print(f"\n== {label}", flush=True)
    log = Path(args.workdir) / f"server-{cap >> 20 if cap else 0}M.log"
    srv = Server(args.bundle, cgroup, log)
    srv.start()
    port = srv.port
    with urllib_json(port, "/model") as meta:
        name, size = meta["name"], meta["input"]["shape"][1]

    valid = valid_images(args.images)
    expected = {}
    for key, data in valid.items():  # before the attack: what the server answers quietly is "correct"
        status, body = call(port, "POST", "/predict", data, {"Content-Type": "image/jpeg"})
        expected[key] = top1(body) if status == 200 else None
    for _ in range(20):  # warm, then measure the baseline
        call(port, "POST", "/predict", valid["small-0"], {"Content-Type": "image/jpeg"})
    rss_before = memory_kb(srv.proc.pid, "VmRSS").get("VmRSS", 0) * 1024

    attacks = payloads(name, size, 20 * MiB)
    t_end = time.monotonic() + args.seconds
    results: dict[str, Counter] = defaultdict(Counter)
    latencies: list[float] = []
    valid_ok = Counter()
    rss_peak = [rss_before]
    lock = threading.Lock()
    slow_stats: Counter = Counter()

    def sample():
        while time.monotonic() < t_end + 1:
            with srv.lock:
                pid = srv.proc.pid
            rss_peak[0] = max(rss_peak[0], memory_kb(pid, "VmRSS").get("VmRSS", 0) * 1024)
            time.sleep(0.1)

    def valid_client(seed: int):
        rnd = random.Random(seed)
        keys = list(valid)
        while time.monotonic() < t_end:
            key = rnd.choice(keys)
            t0 = time.perf_counter()
            status, body = call(port, "POST", "/predict", valid[key], {"Content-Type": "image/jpeg"})
            ms = (time.perf_counter() - t0) * 1e3
            ok = status == 200 and top1(body) == expected[key]
            with lock:
                latencies.append(ms)
                valid_ok["ok" if ok else f"wrong: {status}"] += 1
            time.sleep(rnd.uniform(0.02, 0.1))

    def attacker(seed: int):
        rnd = random.Random(seed)
        kinds = list(attacks) + list(RAW)
        while time.monotonic() < t_end:
            kind = rnd.choice(kinds)
            if kind in RAW:
                make, allowed = RAW[kind]
                status = raw(port, make(20 * MiB))
            else:
                method, path, body, headers, allowed = attacks[kind]
                status, _ = call(port, method, path, body, headers)
            with lock:
                results[kind][status] += 1
                if status not in allowed:
                    results[kind]["UNEXPECTED"] += 1

    threads = [threading.Thread(target=sample, daemon=True),
               threading.Thread(target=srv.watch, args=(t_end,), daemon=True),
               threading.Thread(target=slow_clients, args=(port, t_end, args.slow, slow_stats), daemon=True)]
    threads += [threading.Thread(target=valid_client, args=(i,), daemon=True) for i in range(args.valid_clients)]
    threads += [threading.Thread(target=attacker, args=(100 + i,), daemon=True) for i in range(args.attackers)]
    for t in threads:
        t.start()
    for t in threads[3:]:
        t.join(timeout=args.seconds + 120)
    time.sleep(5)
    for _ in range(5):
        call(port, "POST", "/predict", valid["small-0"], {"Content-Type": "image/jpeg"})
    with srv.lock:
        rss_after = memory_kb(srv.proc.pid, "VmRSS").get("VmRSS", 0) * 1024
        oom = cgroup.oom_kills() if cgroup else None
        cg_peak = cgroup.peak() if cgroup else None
        stop(srv.proc)
    if cgroup:
        time.sleep(0.5)
        cgroup.remove()

    lat = sorted(latencies)
    total = sum(valid_ok.values())
    out = {
        "cap_mib": cap >> 20 if cgroup else None, "cap_note": "" if cgroup else why, "seconds": args.seconds,
        "oom_kills": oom, "server_exits": srv.exits,
        "valid_requests": total, "valid_correct_share": valid_ok["ok"] / total if total else 0.0,
        "valid_failures": {k: v for k, v in valid_ok.items() if k != "ok"},
        "valid_p50_ms": lat[len(lat) // 2] if lat else None, "valid_p99_ms": lat[int(len(lat) * 0.99)] if lat else None,
        "rss_mib": {"before": rss_before / MiB, "peak": rss_peak[0] / MiB, "after": rss_after / MiB},
        "cgroup_peak_mib": cg_peak / MiB if cg_peak else None,
        "attacks": {k: {str(s): n for s, n in v.items()} for k, v in results.items()},
        "slow_clients": dict(slow_stats),
        "unexpected": sum(v["UNEXPECTED"] for v in results.values()),
    }
    print(f"  OOM kills: {oom if oom is not None else 'n/a (no cap)'}; server exits: {srv.exits or 'none'}")
    print(f"  valid: {valid_ok['ok']}/{total} correct ({100 * out['valid_correct_share']:.1f}%), "
          f"p50 {out['valid_p50_ms'] or 0:.0f} ms, p99 {out['valid_p99_ms'] or 0:.0f} ms during the attack"
          + (f"; failures {out['valid_failures']}" if out["valid_failures"] else ""))
    print(f"  RSS before {out['rss_mib']['before']:.0f} MiB, peak {out['rss_mib']['peak']:.0f} MiB, after {out['rss_mib']['after']:.0f} MiB"
          + (f"; cgroup peak {out['cgroup_peak_mib']:.0f} MiB" if out["cgroup_peak_mib"] else ""))
    for kind, counts in sorted(results.items()):
        print(f"  {kind:36} {dict(sorted((str(k), v) for k, v in counts.items()))}")
    print(f"  slow clients: {dict(slow_stats)}", flush=True)
    return out


class urllib_json:
    def __init__(self, port: int, path: str):
        self.port, self.path = port, path

    def __enter__(self):
        status, body = call(self.port, "GET", self.path, None, {})
        return json.loads(body)

    def __exit__(self, *exc):
        return False


def valid_images(folder: Path | None) -> dict[str, bytes]:
    """Small JPEGs (from --images if given) and one 12 Mpx camera-sized JPEG."""
    out = {}
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:: 7][:8] if folder else []
    for i, p in enumerate(files):
        out[f"small-{i}"] = p.read_bytes()
    if not out:
        for i in range(4):
            out[f"small-{i}"] = encode(photo(640, 480, i), "JPEG", quality=85)
    out["camera 4000x3000"] = encode(photo(4000, 3000, 9), "JPEG", quality=85)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--images", type=Path, help="folder of valid JPEGs (default: synthetic ones)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true", help="10 s under the 256 MiB cap only")
    ap.add_argument("--cap", action="append", help="memory cap per run, e.g. 600M (repeatable; default 600M and 256M)")
    ap.add_argument("--valid-clients", type=int, default=2)
    ap.add_argument("--attackers", type=int, default=6)
    ap.add_argument("--slow", type=int, default=600, help="slowloris + idle connections held open (half each)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON line with every figure at the end")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.cap = 10.0, args.cap or ["256M"]
    caps = args.cap or ["600M", "256M"]
    if args.workdir is None:
        import tempfile

        args.workdir = tempfile.mkdtemp(prefix="edgeport-attack-")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edge_server.budget import parse_size

    runs = [run_once(args, parse_size(c)) for c in caps]
    ok = all((r["oom_kills"] in (0, None)) and not r["server_exits"] and r["valid_correct_share"] >= 0.99 and not r["unexpected"]
             for r in runs)
    if args.json:
        print(json.dumps({"runs": runs, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
