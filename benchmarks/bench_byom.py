"""Bring your own model: each source kind through the export rows, measured (agreement, size, latency ratio).

    python benchmarks/bench_byom.py [--size 64] [--rows tflite/float32,tflite/int8,onnx/float32,onnx/int8] [--out FILE]

Sources are built here, offline (keras.applications with weights=None, a hand-written CNN with an
adapted Normalization, the same small CNN saved as legacy .h5 and as a SavedModel, and an NCHW ONNX
file laid out as torch.onnx.export writes one). Each export is verified by the exporter itself
against its reference (Keras, or ONNX Runtime on the source file); the latency ratio is the
exported file's p50 over the same source's TFLite float32 p50. Untrained weights: the int8
agreement of a deep untrained network (EfficientNet) measures noise in random activations, and is
printed as measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def build_sources(root: Path, size: int) -> dict[str, tuple[Path, dict]]:
    import keras
    import numpy as np

    from edge_core.preprocessing import declared
    from test_byom_sources import IMAGENET, small_cnn, torchlike_onnx

    keras.utils.set_random_seed(0)
    out = {}
    norm = keras.layers.Normalization()
    norm.adapt(np.random.default_rng(0).uniform(0, 255, (32, size, size, 3)).astype("float32"))
    keras.Sequential([keras.Input((size, size, 3)), norm, keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
                      keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                      keras.layers.Dense(3, activation="softmax")]).save(root / "normcnn.keras")
    out[".keras, hand-written CNN with adapted Normalization"] = (root / "normcnn.keras", {})
    for name, ctor in (("EfficientNetB0", keras.applications.EfficientNetB0), ("MobileNetV3Small", keras.applications.MobileNetV3Small)):
        m = ctor(weights=None, input_shape=(size, size, 3), classes=3)
        kernel, bias = m.layers[-1].get_weights() if m.layers[-1].get_weights() else (None, None)
        if kernel is not None and kernel.ndim == 2:  # spread an untrained head's near-tied scores (see tests/test_byom.py)
            m.layers[-1].set_weights([kernel * 1000, bias])
        m.save(root / f"{name}.keras")
        out[f".keras, keras.applications {name} (weights=None)"] = (root / f"{name}.keras", {})
    cnn = small_cnn(keras, (size, size, 3))
    cnn.save(root / "cnn.h5")
    cnn.export(str(root / "saved"), verbose=False)
    out["legacy .h5, small BatchNorm CNN"] = (root / "cnn.h5", {})
    out["SavedModel folder, same CNN"] = (root / "saved", {})
    torchlike_onnx(root / "torch.onnx", size)
    out["ONNX NCHW (torch-style, ImageNet mean/std declared)"] = (root / "torch.onnx", {"preprocessing": declared(**IMAGENET)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rows", default="tflite/float32,tflite/float16,tflite/dynamic,tflite/int8,onnx/float32,onnx/float16,onnx/int8")
    ap.add_argument("--only", help="substring of the source names to run")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)

    from exporter import ExportConfig, VerificationError, export
    from trainer.demo_data import DemoDataConfig, generate

    root = Path(tempfile.mkdtemp(prefix="bench-byom-"))
    try:
        generate(DemoDataConfig(root / "images", classes=3, per_class=34, size=args.size, seed=11))
        (root / "labels.txt").write_text("circle\nsquare\ntriangle\n")
        rows = []
        for name, (path, kw) in build_sources(root, args.size).items():
            if args.only and args.only not in name:
                continue
            base = None
            for row in args.rows.split(","):
                fmt, precision = row.split("/")
                try:
                    r = export(ExportConfig(source=path, labels=root / "labels.txt", format=fmt, precision=precision,
                                            images=root / "images", calibration=root / "images", out=root / "b" / f"{path.stem}.{fmt}-{precision}",
                                            min_agreement=0.0, calibration_size=100, verify_size=100, **kw), log=lambda m: None)
                    v = r.meta["verification"]
                except VerificationError as e:  # not expected at min_agreement 0, but say so if it happens
                    v = {"error": str(e)}
                except Exception as e:
                    v = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                if "error" in v:
                    print(f"{name:55s} {row:15s} ERROR {v['error']}", flush=True)
                    rows.append({"source": name, "row": row, "error": v["error"]})
                    continue
                p50 = v["latency_ms"]["p50"]
                base = p50 if row == "tflite/float32" else base
                ratio = p50 / base if base else float("nan")
                rows.append({"source": name, "row": row, "agreement": v["top1_agreement"], "size_mb": v["size_bytes"] / 1e6,
                             "p50_ms": p50, "latency_vs_tflite_f32": ratio, "reference": v.get("reference")})
                print(f"{name:55s} {row:15s} agreement {100 * v['top1_agreement']:5.1f}%  size {v['size_bytes'] / 1e6:6.2f} MB  "
                      f"p50 {p50:7.3f} ms  x{ratio:.2f}", flush=True)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
