"""The server on a small board's budget: 1 GB of memory and 1-2 CPUs, under a bounded load.

    python benchmarks/bench_small_board.py BUNDLE --images DIR [--cpus 0] [--memory 1G]
           [--requests 500] [--concurrency 4] [--device raspberry-pi-4] [--workers N] [--threads N]

Starts `edgeport serve` on 127.0.0.1 inside a memory and CPU cap, sends
--requests POST /predict (the images of DIR, one folder per class, in turn)
from --concurrency client threads, and prints throughput, p50/p99 latency,
errors, wrong labels and the server's RSS (peak and at the end) as JSON.

The cap is applied with the first mechanism this machine has, in this order:
systemd-run --scope (MemoryMax, AllowedCPUs), cgroup v2, cgroup v1 (memory +
cpuset), and last prlimit --as + taskset (an address-space cap: stricter than
RSS, as mmapped model files count). The result names the one used.
Clients run outside the cap: they stand for the callers on the network.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from serverproc import memory_kb, stop, wait_ready

ROOT = Path(__file__).resolve().parent.parent


def parse_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


# ---------------------------------------------------------------- caps: each returns (command prefix, cleanup, peak reader)

def cap_systemd(name, mem, cpus):
    prefix = ["systemd-run", "--scope", "--quiet", "-p", f"MemoryMax={mem}", "-p", f"AllowedCPUs={cpus}", "--"]
    return prefix, lambda: None, lambda: None


def cap_cgroup2(name, mem, cpus):
    base = Path("/sys/fs/cgroup") / name
    base.mkdir(exist_ok=True)
    (base / "memory.max").write_text(str(mem))
    (base / "memory.swap.max").write_text("0")
    (base / "cpuset.cpus").write_text(cpus)
    prefix = ["sh", "-c", f'echo $$ > {base}/cgroup.procs && exec "$@"', "sh"]
    return prefix, lambda: base.rmdir(), lambda: int((base / "memory.peak").read_text()) if (base / "memory.peak").exists() else None


def cap_cgroup1(name, mem, cpus):
    memdir, cpudir = Path("/sys/fs/cgroup/memory") / name, Path("/sys/fs/cgroup/cpuset") / name
    memdir.mkdir(exist_ok=True)
    cpudir.mkdir(exist_ok=True)
    (memdir / "memory.limit_in_bytes").write_text(str(mem))
    (cpudir / "cpuset.cpus").write_text(cpus)
    (cpudir / "cpuset.mems").write_text((Path("/sys/fs/cgroup/cpuset") / "cpuset.mems").read_text().strip())
    prefix = ["sh", "-c", f'echo $$ > {memdir}/tasks && echo $$ > {cpudir}/tasks && exec "$@"', "sh"]

    def cleanup():
        for d in (memdir, cpudir):
            for _ in range(50):  # the group empties a moment after the server exits
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)

    return prefix, cleanup, lambda: int((memdir / "memory.max_usage_in_bytes").read_text())


def cap_prlimit(name, mem, cpus):
    return ["prlimit", f"--as={mem}", "--", "taskset", "-c", cpus], lambda: None, lambda: None


def _usable(kind: str) -> bool:
    if kind == "systemd":
        return Path("/run/systemd/system").is_dir() and shutil.which("systemd-run") is not None
    if kind == "cgroup2":
        controllers = Path("/sys/fs/cgroup/cgroup.controllers")
        return controllers.exists() and {"memory", "cpuset"} <= set(controllers.read_text().split()) and os.access("/sys/fs/cgroup", os.W_OK)
    if kind == "cgroup1":
        return os.access("/sys/fs/cgroup/memory", os.W_OK) and os.access("/sys/fs/cgroup/cpuset", os.W_OK)
    return shutil.which("prlimit") is not None and shutil.which("taskset") is not None


CAPS = {"systemd": cap_systemd, "cgroup2": cap_cgroup2, "cgroup1": cap_cgroup1, "prlimit": cap_prlimit}


# ---------------------------------------------------------------- load

def load_images(folder: Path) -> list[tuple[str, bytes]]:
    items = [(p.parent.name, p.read_bytes()) for p in sorted(folder.glob("*/*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    if not items:
        sys.exit(f"Expected images in one folder per class. Received: {str(folder)!r} with none")
    return items


def run_load(port: int, images, requests: int, concurrency: int, deadline_s: float) -> dict:
    """`requests` POST /predict from `concurrency` threads, one keep-alive connection each."""
    latencies, errors, wrong = [], [], 0
    deadline = time.monotonic() + deadline_s

    def worker(k: int):
        nonlocal wrong
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(k, requests, concurrency):
            if time.monotonic() > deadline:
                errors.append("deadline")
                continue
            label, body = images[i % len(images)]
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict?top_k=1", body, {"Content-Type": "image/jpeg"})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                errors.append(type(e).__name__)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            if resp.status != 200:
                errors.append(str(resp.status))
            elif json.loads(data)["predictions"][0]["label"] != label:
                wrong += 1
        conn.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return {
        "requests": requests, "concurrency": concurrency, "ok": len(latencies) - sum(e.isdigit() for e in errors),
        "errors": len(errors), "error_kinds": sorted(set(errors)), "wrong_label": wrong,
        "wall_s": round(wall, 2), "throughput_rps": round(len(latencies) / wall, 1),
        "p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2), "max_ms": round(max(latencies, default=float("nan")), 2),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--cpus", default="0", help="CPU list for the server (cpuset syntax: 0 or 0-1)")
    ap.add_argument("--memory", default="1G")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--device", default="raspberry-pi-4")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--cap", choices=[*CAPS, "auto"], default="auto")
    ap.add_argument("--port", type=int, default=18490)
    ap.add_argument("--deadline-s", type=float, default=300, help="stop sending after this long, whatever is left")
    args = ap.parse_args(argv)

    kind = args.cap if args.cap != "auto" else next((k for k in CAPS if _usable(k)), None)
    if kind is None:
        sys.exit("Expected one of systemd-run, cgroup v2/v1 or prlimit+taskset to cap the server. Received: none usable")
    mem = parse_bytes(args.memory)
    prefix, cleanup, peak = CAPS[kind](f"edgeport-small-board-{os.getpid()}", mem, args.cpus)
    cmd = [sys.executable, "-m", "edge_server.cli", "serve", str(args.bundle), "--device", args.device,
           "--host", "127.0.0.1", "--port", str(args.port), "--no-access-log"]
    cmd += ["--workers", str(args.workers)] if args.workers else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    images = load_images(args.images)
    log = Path(f"/tmp/bench_small_board-{args.port}.log")
    proc = subprocess.Popen([*prefix, *cmd], stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        try:
            ready_s = wait_ready(f"http://127.0.0.1:{args.port}/v2/health/ready", proc, 120)
        except RuntimeError as e:
            sys.exit(str(e))
        run_load(args.port, images, min(20, args.requests), args.concurrency, 60)  # warm-up: pools, caches
        load1 = os.getloadavg()[0]
        result = run_load(args.port, images, args.requests, args.concurrency, args.deadline_s)
        server = {"start_to_ready_s": round(ready_s, 2), **{f"{k}_mb": round(v / 1024, 1) for k, v in memory_kb(proc.pid, "VmRSS", "VmHWM").items()}}
        try:
            p = peak()
            if p:
                server["cgroup_peak_mb"] = round(p / (1 << 20), 1)
        except OSError:
            pass
        alive = proc.poll() is None
    finally:
        stop(proc)
        cleanup()
    out = {
        "cap": kind, "memory": args.memory, "cpus": args.cpus, "device": args.device,
        "workers": args.workers, "threads": args.threads, "bundle": args.bundle.name,
        "host_load_1min_before": round(load1, 2), "server_alive_after": alive, "server": server, "load": result,
    }
    print(json.dumps(out, indent=2))
    return 0 if alive and result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
