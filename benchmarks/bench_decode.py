"""Exact vs fast (reduced-scale) decoding: the CPU cost of turning a photo into model pixels.

    python benchmarks/bench_decode.py [--size 224] [--runs 100]

Common camera frame sizes, one demo image each saved as a JPEG (quality 90),
decoded to SIZE x SIZE both ways by edge_core.imageio in this process.
Prints median milliseconds and the ratio fast/exact, and how far the pixels
move. Whether moved pixels move answers is model-specific: tests/test_decode_modes.py
measures top-1 agreement on the demo model, and every export measures it on
the model's own verification images (bundle.json verification.fast_decode).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_core.imageio import decode_to_array, open_image, reduced_scale  # noqa: E402
from trainer.demo_data import render_image  # noqa: E402

FRAMES = [(640, 480), (1280, 720), (1920, 1080), (4032, 3024)]


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="model input size")
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args(argv)
    print(f"model input {args.size}x{args.size}; median of {args.runs} runs\n")
    print(f"  {'frame':>10} {'scale':>6} {'exact ms':>9} {'fast ms':>8} {'fast/exact':>11} {'mean |diff|':>12}")
    for w, h in FRAMES:
        img = render_image("triangle", np.random.default_rng(w), max(w, h)).crop((0, 0, w, h))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        exact = median_ms(lambda: decode_to_array(data, args.size), args.runs)
        fast = median_ms(lambda: decode_to_array(data, args.size, fast=True), args.runs)
        diff = np.abs(decode_to_array(data, args.size).astype(int) - decode_to_array(data, args.size, fast=True)).mean()
        scale = reduced_scale(open_image(data), args.size)
        print(f"  {w:>5}x{h:<4} {'1/' + str(scale):>6} {exact:9.2f} {fast:8.2f} {fast / exact:10.2f}x {diff:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
