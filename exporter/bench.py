"""`edgeport bench BUNDLE...`: several exports side by side on the same images.

Two tables, never mixed: what this run measured on the images it was given
(accuracy from their class folders, agreement between the bundles and with
each bundle's source Keras model where that file is still there, latency),
and what each bundle.json recorded when it was exported, on the export's own
verification images, which may be other images entirely.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from edge_core.bundle import sha256_file
from edge_core.imageio import DEFAULT_MAX_PIXELS
from edge_core.preprocessing import Preprocessing
from edge_core.service import ModelService, ServiceOptions, to_probabilities

from . import calibration as calib
from .verify import accuracy, latency_ms, runtime_probabilities

# Without --images, latency is measured on this many seeded random-pixel images (pixels do not change
# a CNN's work, only its answers, so this times the model fairly but says nothing about accuracy).
SYNTHETIC_IMAGES = 8


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _ms(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def text_table(head: list[str], rows: list[list[str]]) -> str:
    lines = [head, *rows]
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines)


def source_reference(meta: dict):
    """raw 0-255 pixels -> probabilities of the model the bundle was exported from, or (None, why not).

    Only the very file that was exported (same sha256), and only a Keras model (.keras, .h5, SavedModel):
    an ONNX source needs onnx2tf's conversion to run here, and its own reference is ONNX Runtime.
    """
    src = meta.get("source") or {}
    path = Path(src["model_file"]) if src.get("model_file") else None
    if path is None:
        return None, "bundle.json names no source model"
    from .source import SOURCE_KINDS, ModelSource

    kind = next((k for k in ("keras", "h5", "saved_model") if SOURCE_KINDS[k].matches(path)), None)
    if kind is None:
        return None, f"source {path} is {'not there' if not path.exists() else 'not a Keras model'}"
    digest = sha256_file(path / "saved_model.pb" if path.is_dir() else path)
    if src.get("model_sha256") and digest != src["model_sha256"]:
        return None, f"source {path} has changed since the export (sha256 differs)"
    if importlib.util.find_spec("keras") is None:
        return None, "Keras is not installed (pip install 'edgeport[train]')"
    from .console import import_tensorflow_quietly

    import_tensorflow_quietly()
    model = ModelSource(path, list(meta.get("labels") or []), kind=kind).load_model()
    pre = src.get("preprocessing")
    pre = Preprocessing(tuple(pre["mean"]), tuple(pre["std"]), pre.get("color_order", "RGB")) if pre else Preprocessing()
    activation = (meta.get("output") or {}).get("activation", "softmax")

    def predict(x: np.ndarray) -> np.ndarray:
        return to_probabilities(model.predict(pre.apply(x).astype(np.float32), batch_size=32, verbose=0), activation)

    return predict, None


def entries(bundles: list[Path]) -> list[tuple[Path, str | None]]:
    """(bundle, precision) to measure: every precision of a multi-precision bundle (export --precision auto),
    side by side like separate bundles; None for a bundle of one."""
    from edge_core.bundle import load_bundle

    out = []
    for path in bundles:
        held = load_bundle(path).precisions if Path(path).is_dir() else [None]
        out += [(path, p) for p in held] if len(held) > 1 else [(path, None)]
    return out


def bench(bundles: list[Path], images: Path | None, threads: int = 2, limit: int = 200, keras: bool = True,
          log=print, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[dict]:
    """Each bundle measured on the same images; returns one row per bundle: {"bundle", "format", "precision",
    "measured": figures of this run, "recorded": bundle.json's verification}."""
    rows = []
    first_top1 = None
    references: dict[str, tuple] = {}  # source file -> (probabilities on x, or None; why not)
    x = y = loaded = None
    notes = []
    for path, precision in entries(bundles):
        svc = ModelService.from_path(path, options=ServiceOptions(threads=threads, pool_size=1, solo_threads=0, max_pixels=max_pixels,
                                                                  precision=precision))
        rt = svc.pool.first
        if images is not None:
            if loaded != (svc.size, svc.labels):  # the same files; decoded again only for another input size or label set
                x, y = calib.load_images(calib.spread(calib.folder_items(images, svc.labels), limit), svc.size, log, max_pixels=max_pixels)
                loaded = (svc.size, svc.labels)
        else:
            x = np.random.default_rng(0).integers(0, 256, (SYNTHETIC_IMAGES, svc.size, svc.size, 3), dtype=np.uint8)
            y = np.full(len(x), -1)
        m = {"images": int(len(x)), "size_bytes": svc.bundle.model_path.stat().st_size, "latency_ms": latency_ms(rt, x),
             "threads": threads, "runtime": svc.backend}
        if images is not None:
            probs = runtime_probabilities(rt, x, svc.activation)
            top1 = probs.argmax(1)
            m |= {"labelled": int((y >= 0).sum()), "accuracy": accuracy(probs, y)}
            if first_top1 is None:
                first_top1 = top1
            elif len(top1) == len(first_top1):  # the same files, unless one failed to decode at one size only
                m["agreement_with_first"] = float((top1 == first_top1).mean())
            if keras:
                key = str((svc.bundle.meta.get("source") or {}).get("model_file"))
                if key not in references:
                    predict, why = source_reference(svc.bundle.meta)
                    references[key] = ((predict(x), None) if predict else (None, why))
                    if why:
                        notes.append(f"{path}: no Keras comparison: {why}")
                ref, _ = references[key]
                if ref is not None and ref.shape == probs.shape:
                    m |= {"keras_accuracy": accuracy(ref, y), "agreement_with_keras": float((ref.argmax(1) == top1).mean())}
        rows.append({"bundle": str(path) + (f" [{precision}]" if precision else ""), "format": svc.bundle.format, "precision": svc.bundle.meta.get("precision"),
                     "measured": m, "recorded": svc.bundle.meta.get("verification") or {}})
    log(report(rows, images, threads, notes))
    return rows


# (header, the cell of a row, left out when no row has a figure)
MEASURED_COLUMNS = [
    ("bundle", lambda r: r["bundle"], False),
    ("format", lambda r: r["format"], False),
    ("precision", lambda r: r["precision"] or "-", False),
    ("size", lambda r: f"{r['measured']['size_bytes'] / 1e6:.2f} MB", False),
    ("accuracy", lambda r: _pct(r["measured"].get("accuracy")), True),
    ("agrees w/ first", lambda r: _pct(r["measured"].get("agreement_with_first")), True),
    ("keras acc", lambda r: _pct(r["measured"].get("keras_accuracy")), True),
    ("agrees w/ keras", lambda r: _pct(r["measured"].get("agreement_with_keras")), True),
    ("p50 ms", lambda r: _ms(r["measured"]["latency_ms"]["p50"]), False),
    ("p95 ms", lambda r: _ms(r["measured"]["latency_ms"]["p95"]), False),
]


def report(rows: list[dict], images: Path | None, threads: int, notes: list[str]) -> str:
    m0 = rows[0]["measured"]
    if images is not None:
        where = (f"{m0['images']} images from {images} ({m0['labelled']} in folders named by class: accuracy counts those), "
                 f"{threads} thread(s)")
    else:
        where = (f"no --images: latency on {m0['images']} random-pixel images, {threads} thread(s); "
                 "accuracy and agreement need --images DIR")
    # A column of figures this run did not measure (no --images, one bundle, no Keras model) is left out.
    shown = [(h, f) for h, f, optional in MEASURED_COLUMNS if not optional or any(f(r) != "-" for r in rows)]
    measured = [[f(r) for _, f in shown] for r in rows]
    head = [h for h, _ in shown]
    rec_head = ["bundle", "images", "keras acc", "export acc", "agreement", "max diff", "p50 ms", "p95 ms"]
    recorded = []
    for r in rows:
        v = r["recorded"]
        lat = v.get("latency_ms") or {}
        recorded.append([r["bundle"], str(v.get("images", "-")), _pct(v.get("reference_accuracy")), _pct(v.get("exported_accuracy")),
                         _pct(v.get("top1_agreement")), "-" if v.get("max_abs_diff") is None else f"{v['max_abs_diff']:.4f}",
                         _ms(lat.get("p50")), _ms(lat.get("p95"))])
    return "\n".join([
        f"measured now: {where}", text_table(head, measured), *notes, "",
        "recorded at export (bundle.json: the export's own verification images and machine, not measured now)",
        text_table(rec_head, recorded),
    ])
