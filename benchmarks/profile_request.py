"""Where one /predict request's CPU goes inside `edgeport serve`, sampled by py-spy.

    python benchmarks/profile_request.py BUNDLE [--concurrency 1] [--requests 2000] [--rate 97] [--py-spy PATH]

Starts `edgeport serve BUNDLE --no-access-log`, warms it, attaches `py-spy
record` (raw; idle samples dropped: a thread waiting for the GIL, a socket or a
model instance is not counted), sends `--requests` POSTs of a 640x480 JPEG
(benchmarks/bench_server.py's photo) from `--concurrency` keep-alive clients,
and sorts every sample into one stage of the request path by the table
STAGES below. Each stage's share of the samples, times the samples' duration,
over the requests served, is its microseconds per request. Also prints the
server's CPU per request read from /proc, which the sum should approach
(py-spy sees Python threads only: inference threads LiteRT starts itself,
e.g. the solo instance's second thread at concurrency 1, are not in the sum).
Each sample pauses the server for a moment (py-spy's idle detection needs
it; --nonblocking counts threads waiting in poll() as busy), so the rate is
low by default and the figures are a little above an unsampled server's.

py-spy: `pip install py-spy` (a binary wheel; not a dependency of edgeport).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from serverproc import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]

# A frame matching a pattern (a substring of py-spy's "function (file:line)") puts the sample in that
# stage; frames are read from the thread's root to the sample's leaf, so the deepest match wins unless
# a stage owns its callees (inference owns whatever LiteRT's Python wrapper calls, JSON whatever the
# encoder calls). The order within the table only matters between patterns of one frame.
STAGES: tuple[tuple[str, str, bool], ...] = (
    # (pattern, stage, owns the frames below it)
    ("waitress/", "waitress: socket I/O, task queue, response write", False),
    ("waitress/parser.py", "waitress: HTTP parse", True),
    ("waitress/buffers.py", "waitress: HTTP parse", True),
    ("flask/", "Flask/werkzeug dispatch", False),
    ("werkzeug/", "Flask/werkzeug dispatch", False),
    ("_start (edge_server/app.py", "request hooks: id, key, admission", False),
    ("_finish (edge_server/app.py", "request hooks: id, key, admission", False),
    ("edge_server/budget.py", "request hooks: id, key, admission", True),
    ("edge_server/context.py", "request hooks: id, key, admission", True),
    ("_account (edge_server/app.py", "metrics", False),
    ("edge_server/metrics.py", "metrics", True),
    ("prometheus_client/", "metrics", True),
    ("logging/", "logging", True),
    ("edge_server/routes/", "route: arguments, body", False),
    ("open_image (edge_core/imageio.py", "decode", True),
    ("decode_peak (edge_core/imageio.py", "request hooks: id, key, admission", True),
    ("to_model_input (edge_core/imageio.py", "preprocess: rotate, convert, resize", False),
    ("load (PIL/ImageFile.py", "decode", True),
    ("acquire (edge_core/pool.py", "inference", True),
    ("run (edge_core/runtimes.py", "inference", True),
    ("rank (edge_core/service.py", "rank + probabilities", True),
    ("to_probabilities (edge_core/service.py", "rank + probabilities", True),
    ("jsonify (flask/", "JSON", True),
    ("json/", "JSON", True),
)
# Leaves where a thread waits, not works (py-spy's own idle detection lets these through): dropped.
IDLE_LEAVES = ("poll2 (waitress/wasyncore.py", "Condition.wait (threading.py", "Event.wait (threading.py", "select (selectors.py")
ORDER = ["waitress: HTTP parse", "waitress: socket I/O, task queue, response write", "Flask/werkzeug dispatch",
         "request hooks: id, key, admission", "route: arguments, body", "decode", "preprocess: rotate, convert, resize",
         "inference", "rank + probabilities", "JSON", "metrics", "logging", "other"]


def stage_of(stack: str) -> str | None:
    """The stage of one sample (py-spy raw: frames root first, ';'-separated); None outside the request path."""
    stage = None
    for frame in stack.split(";"):
        for pattern, name, owns in STAGES:
            if pattern in frame:
                stage = name
                if owns:
                    return stage
    return stage or "other"


def classify(raw: Path) -> Counter:
    out: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "waitress/" not in stack or stack.split(";")[-1].startswith(IDLE_LEAVES):
            continue  # outside the request path (the maintenance thread's sleep), or waiting
        out[stage_of(stack)] += int(n)
    return out


def top_leaves(raw: Path, n: int) -> dict[str, list]:
    by: dict[str, Counter] = {}
    for line in raw.read_text().splitlines():
        stack, _, k = line.rpartition(" ")
        if "waitress/" in stack and not stack.split(";")[-1].startswith(IDLE_LEAVES):
            by.setdefault(stage_of(stack), Counter())[stack.split(";")[-1]] += int(k)
    return {s: c.most_common(n) for s, c in by.items()}


def main(argv=None) -> int:
    import bench_server as bs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--concurrency", type=int, default=1,
                    help="1 (default): each stage's CPU; at 8, a thread waiting for the GIL is sampled in the frame it waits in")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rate", type=int, default=97,
                    help="py-spy samples per second (prime: no beat with timers; low: each sample pauses the server)")
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    ap.add_argument("--raw", type=Path, help="keep py-spy's raw stacks here")
    ap.add_argument("--top", type=int, default=0, help="also print the N leaf frames with most samples in each stage")
    ap.add_argument("--serve-args", default="", help="more `edgeport serve` flags, e.g. '--processes 2'")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jpeg = bs.make_jpeg(tmp / "photo.jpg")
        port = free_port()
        raw = args.raw or tmp / "profile.txt"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        server = subprocess.Popen([sys.executable, "-m", "edge_server", str(args.bundle), "--no-access-log", "--port", str(port),
                                   *args.serve_args.split()], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spy = None
        spy_log = open(tmp / "py-spy.log", "wb")  # noqa: SIM115 - py-spy writes it until the end of the try
        try:
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", server, timeout=120)
            bs.load(port, "/predict?top_k=1", jpeg, args.concurrency, 8 * args.concurrency, 30)  # warm, unsampled
            # Attached once the server is warm: start-up and warm-up are not in the samples.
            spy = subprocess.Popen([args.py_spy, "record", "-f", "raw", "-r", str(args.rate), "-o", str(raw), "--subprocesses",
                                    "--pid", str(server.pid)], stdout=subprocess.DEVNULL, stderr=spy_log)
            time.sleep(1.0)  # py-spy attaches
            cpu0 = bs.cpu_seconds(server.pid)
            r = bs.load(port, "/predict?top_k=1", jpeg, args.concurrency, args.requests, 300)
            cpu_ms = (bs.cpu_seconds(server.pid) - cpu0) * 1e3 / max(1, r["n"])
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(timeout=60)
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
            stop(server)
            spy_log.close()
        if not raw.exists():
            print((tmp / "py-spy.log").read_text(), file=sys.stderr)
            return 1
        # Idle threads are not sampled; the second after attaching and before the load holds none of a request's work.
        us = {k: v / args.rate / r["n"] * 1e6 for k, v in classify(raw).items()}
        leaves = top_leaves(raw, args.top) if args.top else {}
    total = sum(us.values())
    print(f"{r['n']} requests at concurrency {args.concurrency}, {r['rps']:.0f} req/s, {r['errors']} errors; "
          f"py-spy at {args.rate} Hz; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"\n  {'stage':<52} {'us/request':>10} {'share':>6}")
    for k in ORDER:
        if us.get(k):
            print(f"  {k:<52} {us[k]:10.0f} {us[k] / total:6.1%}")
    print(f"  {'sum of the samples':<52} {total:10.0f}")
    print(f"  {'server CPU per request, /proc (all threads)':<52} {cpu_ms * 1e3:10.0f}")
    for stage, frames in leaves.items():
        print(f"\n  {stage}: " + "; ".join(f"{f} {n}" for f, n in frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
