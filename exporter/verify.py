"""Prove an exported file still agrees with the Keras model, using the runtime the device will use.

Figures: top-1 agreement, both accuracies (where labels are known), the
largest probability difference, file size, and median / p95 single-image
latency after warm-up.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_core.errors import RequestError
from edge_core.imageio import DEFAULT_MAX_PIXELS, decode_to_array, open_image, reduced_scale
from edge_core.runtimes import RuntimeOptions, open_runtime
from edge_core.service import to_probabilities

from .console import predict, steps


# A reference top-1 probability under this is "unsure": a changed answer there is a near-tie.
UNSURE = 0.6


def runtime_probabilities(rt, x: np.ndarray, activation: str, desc: str | None = None) -> np.ndarray:
    """One image at a time, as the server runs it; `desc`: a progress bar of that name where one is shown."""
    indices = range(len(x)) if desc is None else steps(range(len(x)), desc)
    return np.concatenate([to_probabilities(rt.run(x[i : i + 1]), activation) for i in indices])


def latency_ms(rt, x: np.ndarray, runs: int = 30, warmup: int = 3) -> dict:
    one = x[:1]
    for _ in range(warmup):
        rt.run(one)
    times = []
    for i in range(runs):
        t = time.perf_counter()
        rt.run(x[i % len(x) : i % len(x) + 1])
        times.append((time.perf_counter() - t) * 1e3)
    return {"p50": round(float(np.median(times)), 3), "p95": round(float(np.percentile(times, 95)), 3), "runs": runs}


def batch_check(rt, x: np.ndarray, single: np.ndarray, activation: str, batch: int = 4) -> dict:
    """Run `batch` images as one batch and compare with the one-at-a-time answers.

    The exported graphs declare a dynamic batch; this proves the runtime takes
    it (LiteRT resizes its input tensor) and that batching changes nothing.
    """
    n = min(batch, len(x))
    try:
        got = to_probabilities(rt.run(x[:n]), activation)
    except Exception as e:  # a runtime that cannot resize says so here, not in production
        return {"batch": n, "ok": False, "error": f"{type(e).__name__}: {str(e).strip()[:200]}"}
    diff = float(np.abs(got - single[:n]).max()) if got.shape == single[:n].shape else float("inf")
    return {"batch": n, "ok": bool(diff < 1e-3), "max_abs_diff": diff}


def accuracy(probs: np.ndarray, y: np.ndarray) -> float | None:
    known = y >= 0
    return float((probs[known].argmax(1) == y[known]).mean()) if known.any() else None


def fast_decode_check(rt, paths: list, size: int, activation: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict:
    """Top-1 agreement of the exported model between exact and reduced-scale ("fast") JPEG decoding.

    Counted only on the images fast decoding actually reduces (JPEGs at least twice the input size
    on both sides). The server's `--decode auto` reads this: under 99% it decodes exactly.
    """
    same = n = 0
    for p in paths:
        try:
            data = Path(p).read_bytes()
            if reduced_scale(open_image(data, max_pixels, size=size), size) == 1:
                continue
            pair = np.stack([decode_to_array(data, size, max_pixels), decode_to_array(data, size, max_pixels, fast=True)])
        except (OSError, RequestError):  # load_images already skipped (and said) what does not read or decode
            continue
        probs = runtime_probabilities(rt, pair, activation)
        n += 1
        same += int(probs[0].argmax() == probs[1].argmax())
    if not n:
        return {"images": 0, "top1_agreement": None,
                "note": f"no verification image is a JPEG of at least {2 * size}x{2 * size}: nothing decodes at reduced scale"}
    return {"images": n, "top1_agreement": same / n}


def verify_export(model, path: Path, fmt: str, x: np.ndarray, y: np.ndarray, activation: str, threads: int = 2,
                  latency_runs: int = 30, paths: list | None = None, reference=None,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict:
    """`reference`: raw pixels -> scores of the source itself (ONNX Runtime for an ONNX source); default the Keras model."""
    raw = reference(x) if reference is not None else predict(model, x.astype(np.float32), 32, "verify: Keras")
    ref = to_probabilities(raw, activation)
    rt = open_runtime(fmt, path, RuntimeOptions(threads=threads))
    got = runtime_probabilities(rt, x, activation, desc="verify: exported")
    batched = batch_check(rt, x, got, activation)
    changed = ref.argmax(1) != got.argmax(1)
    return {
        "images": int(len(x)),
        "top1_agreement": float(1.0 - changed.mean()),
        # Which answers changed: on a model that is unsure of many images (a 70%-accurate transfer),
        # int8 flips mostly near-ties and its accuracy holds; the failure message says which it is.
        "changed": {"count": int(changed.sum()), "reference_unsure": int((changed & (ref.max(1) < UNSURE)).sum()),
                    "unsure_below": UNSURE},
        "reference_accuracy": accuracy(ref, y),
        "exported_accuracy": accuracy(got, y),
        "max_abs_diff": float(np.abs(ref - got).max()),
        "size_bytes": path.stat().st_size,
        "latency_ms": latency_ms(rt, x, latency_runs),
        "dynamic_batch": batched,
        "threads": threads,
        "runtime": rt.backend,
        "reference": "onnxruntime (the source file)" if reference is not None else "keras",
        "fast_decode": fast_decode_check(rt, paths or [], x.shape[1], activation, max_pixels),
    }


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def table(rows: list[dict]) -> str:
    """rows: {format, precision, verification} -> an aligned text table."""
    head = ["format", "precision", "size", "keras acc", "export acc", "agreement", "max diff", "p50 ms", "p95 ms"]
    lines = [head]
    for r in rows:
        v = r["verification"]
        lines.append([
            r["format"], r["precision"], f"{v['size_bytes'] / 1e6:.2f} MB", _pct(v.get("reference_accuracy")),
            _pct(v.get("exported_accuracy")), _pct(v.get("top1_agreement")),
            "-" if v.get("max_abs_diff") is None else f"{v['max_abs_diff']:.4f}",
            f"{v['latency_ms']['p50']:.2f}", f"{v['latency_ms']['p95']:.2f}",
        ])
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in lines)
