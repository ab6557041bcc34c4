"""Camera-sized JPEGs under a board's memory cap: 16 clients at once, each photo size in turn.

    python benchmarks/bench_camera.py BUNDLE [--mpx 12 24 48 100] [--clients 16] [--cap-mib 600] [--json]

For each size and for baseline and progressive JPEGs, starts a fresh `edgeport serve BUNDLE --device
raspberry-pi-4` on 127.0.0.1 in a new memory cgroup with the cap (benchmarks/attack.py; without a
writable cgroup it says so and runs uncapped), then has `--clients` clients post the same photo at
once. A client does what a well-behaved one does with 503: waits its Retry-After and tries again.

The photo is a demo shape (trainer/demo_data.py; circle, square, triangle in turn) rendered at 1/8 of
the side and enlarged 8x, so the answer to check against is the server's answer for the small
original, posted first (with a demo-shapes bundle that is also the shape drawn). Printed per row:
requests answered 200 and correct (top-1 of the small original), the 503s retried on the way, the
wall time of the burst, the server's peak RSS (VmHWM) and the cgroup's peak, and OOM kills.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attack import Server, make_cgroup  # noqa: E402
from serverproc import memory_kb, stop  # noqa: E402

MiB = 1 << 20


SHAPES = ("circle", "square", "triangle")


def photo_pair(mpx: int, shape: str, workdir: Path) -> tuple[bytes, Path, Path]:
    """(the small original's JPEG bytes, baseline file, progressive file) for a square photo of `mpx` Mpx."""
    from trainer.demo_data import render_image

    side = math.isqrt(mpx * 1_000_000) // 8
    small = render_image(shape, np.random.default_rng(mpx), side)
    base, prog = workdir / f"{mpx}mpx-{shape}.jpg", workdir / f"{mpx}mpx-{shape}-progressive.jpg"
    if not (base.is_file() and prog.is_file()):
        big = small.resize((side * 8, side * 8), Image.BILINEAR)
        big.save(base, "JPEG", quality=90)
        big.save(prog, "JPEG", quality=90, progressive=True)
        del big
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=95)
    return buf.getvalue(), base, prog


def post(url: str, data: bytes) -> tuple[int, dict, float]:
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "image/jpeg"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.load(r), 0.0
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), float(e.headers.get("Retry-After") or 1)


def burst(url: str, data: bytes, clients: int, tries: int = 60) -> dict:
    out = {"statuses": [], "retries": 0, "labels": []}
    lock = threading.Lock()

    def client():
        for _ in range(tries):
            status, answer, retry_after = post(url, data)
            if status != 503:
                break
            with lock:
                out["retries"] += 1
            time.sleep(retry_after)
        with lock:
            out["statuses"].append(status)
            out["labels"].append((answer.get("predictions") or [{}])[0].get("label"))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["seconds"] = time.perf_counter() - t0
    return out


def run_row(bundle: Path, cap: int, small: bytes, path: Path, clients: int, workdir: Path) -> dict:
    cgroup, why = make_cgroup(cap)
    srv = Server(bundle, cgroup, workdir / f"server-{path.stem}.log")
    try:
        srv.start()
        url = f"http://127.0.0.1:{srv.port}/predict"
        status, answer, _ = post(url, small)
        expected = answer["predictions"][0]["label"] if status == 200 else None
        start_rss = memory_kb(srv.proc.pid, "VmRSS").get("VmRSS", 0) * 1024
        result = burst(url, path.read_bytes(), clients)
        hwm = memory_kb(srv.proc.pid, "VmHWM").get("VmHWM", 0) * 1024
        return {
            "file": path.name, "file_mib": path.stat().st_size / MiB, "cap_mib": cap // MiB if cgroup else None, "why_uncapped": why,
            "answered": result["statuses"].count(200), "correct": sum(label == expected for label in result["labels"]),
            "clients": clients, "retried_503": result["retries"], "seconds": result["seconds"], "expected": expected,
            "start_rss_mib": start_rss / MiB, "peak_rss_mib": hwm / MiB,
            "cgroup_peak_mib": (cgroup.peak() or 0) / MiB if cgroup else None,
            "oom_kills": cgroup.oom_kills() if cgroup else None, "server_alive": srv.proc.poll() is None,
        }
    finally:
        if srv.proc is not None:
            stop(srv.proc)
        if cgroup is not None:
            cgroup.remove()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--mpx", type=int, nargs="+", default=[12, 24, 48, 100])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--cap-mib", type=int, default=600)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edgeport-bench-camera"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, mpx in enumerate(args.mpx):
        small, base, prog = photo_pair(mpx, SHAPES[i % 3], args.workdir)
        for path in (base, prog):
            row = run_row(args.bundle, args.cap_mib * MiB, small, path, args.clients, args.workdir) | {"shape": SHAPES[i % 3]}
            rows.append(row)
            if not args.json:
                cap = f"{row['cap_mib']} MiB cap" if row["cap_mib"] else f"no cap ({row['why_uncapped']})"
                print(f"{row['file']:<24} {row['file_mib']:5.1f} MiB  {cap}  200: {row['answered']}/{row['clients']}  "
                      f"correct: {row['correct']} ({row['expected']}; drawn: {row['shape']})  503 retried: {row['retried_503']}  {row['seconds']:.1f} s  "
                      f"RSS start {row['start_rss_mib']:.0f} peak {row['peak_rss_mib']:.0f} MiB  "
                      f"cgroup peak {row['cgroup_peak_mib'] or 0:.0f} MiB  OOM kills {row['oom_kills']}", flush=True)
    if args.json:
        print(json.dumps({"rows": rows}))
    ok = all(r["answered"] == r["clients"] == r["correct"] and not r["oom_kills"] and r["server_alive"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
