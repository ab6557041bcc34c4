"""`edgeport bench BUNDLE...`: several exports side by side on the same images."""

from __future__ import annotations

from pathlib import Path


from edge_core.imageio import DEFAULT_MAX_PIXELS
from edge_core.service import ModelService, ServiceOptions

from . import calibration as calib
from .verify import accuracy, latency_ms, runtime_probabilities, table


def bench(bundles: list[Path], images: Path | None, threads: int = 2, limit: int = 200, log=print,
          max_pixels: int = DEFAULT_MAX_PIXELS) -> list[dict]:
    rows = []
    reference = None
    for path in bundles:
        svc = ModelService.from_path(path, options=ServiceOptions(threads=threads, pool_size=1, max_pixels=max_pixels))
        stored = svc.bundle.meta.get("verification") or {}
        v = {"size_bytes": svc.bundle.model_path.stat().st_size, "reference_accuracy": stored.get("reference_accuracy"),
             "exported_accuracy": stored.get("exported_accuracy"), "top1_agreement": stored.get("top1_agreement"),
             "max_abs_diff": stored.get("max_abs_diff"), "latency_ms": stored.get("latency_ms") or {"p50": float("nan"), "p95": float("nan")}}
        if images is not None:
            x, y = calib.load_images(calib.spread(calib.folder_items(images, svc.labels), limit), svc.size,
                                         max_pixels=max_pixels)
            rt = svc.pool.first
            probs = runtime_probabilities(rt, x, svc.activation)
            top1 = probs.argmax(1)
            reference = top1 if reference is None else reference
            v.update({"exported_accuracy": accuracy(probs, y), "latency_ms": latency_ms(rt, x),
                      "agreement_with_first": float((top1 == reference).mean())})
        rows.append({"bundle": str(path), "format": svc.bundle.format, "precision": svc.bundle.meta.get("precision"), "verification": v})
    log(table(rows))
    return rows
