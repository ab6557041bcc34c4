"""Latency of one model file against another of the same format, paired so the machine's load hits both alike.

    python benchmarks/paired_latency.py tflite ALL_INT8.tflite FLOAT_OPS.tflite [--pairs 800] [--threads 2]

Both files are opened with edgeport's runtimes in this process; each round runs one image through both,
back to back, the order alternating round by round. Prints the median of the per-pair ratios B/A and
the ratio of the medians (on a shared machine the two differ by the noise; report both).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def paired(fmt: str, a: Path, b: Path, pairs: int = 800, threads: int = 2, warmup: int = 20) -> dict:
    from edge_core.runtimes import RuntimeOptions, open_runtime

    runtimes = [open_runtime(fmt, p, RuntimeOptions(threads=threads)) for p in (a, b)]
    size = next(s for s in runtimes[0].input.shape[1:3] if isinstance(s, int) and s > 0)
    x = np.random.default_rng(0).integers(0, 256, (1, size, size, 3)).astype(np.uint8)
    for _ in range(warmup):
        for rt in runtimes:
            rt.run(x)
    times = np.zeros((pairs, 2))
    for i in range(pairs):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            t = time.perf_counter()
            runtimes[k].run(x)
            times[i, k] = time.perf_counter() - t
    return {"per_pair_median": float(np.median(times[:, 1] / times[:, 0])),
            "ratio_of_medians": float(np.median(times[:, 1]) / np.median(times[:, 0])),
            "a_p50_ms": float(1e3 * np.median(times[:, 0])), "b_p50_ms": float(1e3 * np.median(times[:, 1]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("format", choices=("tflite", "onnx"))
    ap.add_argument("a", type=Path, help="the baseline file")
    ap.add_argument("b", type=Path, help="the file measured against it")
    ap.add_argument("--pairs", type=int, default=800)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    r = paired(args.format, args.a, args.b, args.pairs, args.threads)
    print(f"{args.format}: {args.b} against {args.a}, {args.pairs} pairs, {args.threads} threads: "
          f"per-pair median {r['per_pair_median']:.3f}x, ratio of medians {r['ratio_of_medians']:.3f}x "
          f"(p50 {r['a_p50_ms']:.2f} / {r['b_p50_ms']:.2f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
