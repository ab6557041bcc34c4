"""What full-integer quantization does to the frozen base's features, measured on the user's own images.

A frozen base + linear head is exported to int8 by quantizing the base as it is; its pooled features
then carry a rounding error of their own. On narrow domains (clip art on white) that error is a
large share of each feature's spread across images (median 0.33-0.39 at 224 px on the shared sets),
and a head fitted to float features alone turns it into flipped answers. The head recipe search
(trainer.head_recipe) reads these int8 features to score each candidate's int8 agreement, and to
offer a head whose features are scaled by their int8 error instead of their spread.

The conversion is the exporter's own (exporter.to_tflite, the same calibration size and spread), all-int8
and without the export's per-layer bias correction: the head is scored against the larger error of the
uncorrected base, less its mean shift (head_recipe.bias_shift). The export's files agreed with the float
model 0-8 points better than this probe on the shared sets (docs/training.md); its job is to rank recipes.
Scored on the corrected features instead, the agreement differences between recipes shrank into noise
and the Tux Paint run (224 px) picked a head 5.5 points less accurate on its validation split (76.9%
against 82.4%, a plain logistic regression 80.2%): measured, so the probe keeps the harsher error.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

CALIBRATION_IMAGES = 200  # the exporter's default calibration size


def int8_features(feature_model, x_calibration: np.ndarray, images: list[np.ndarray], *, threads: int = 2,
                  seed: int = 0, log=print) -> tuple[list[np.ndarray], float]:
    """(the int8 feature extractor's output for each array of `images`, seconds it took).

    `feature_model`: raw 0-255 pixels -> pooled features (float Keras). Calibrated on up to
    CALIBRATION_IMAGES of `x_calibration`, drawn with `seed`."""
    from edge_core.runtimes import LiteRTRuntime, RuntimeOptions
    from exporter.console import steps, tensorflow_lines_dropped
    from exporter.to_tflite import convert

    t = time.perf_counter()
    pick = np.random.default_rng(seed).permutation(len(x_calibration))[:CALIBRATION_IMAGES]
    with tempfile.TemporaryDirectory(prefix="edgeport-int8-probe-") as tmp:
        with tensorflow_lines_dropped():
            path = convert(feature_model, "int8", Path(tmp) / "features.tflite", x_calibration[np.sort(pick)], Path(tmp),
                           log=lambda m: None, io_dtype="float32", threads=threads,
                           correct_bias=False)
        runtime = LiteRTRuntime(path, RuntimeOptions(threads=threads))
        out = [np.concatenate([runtime.run(x[i : i + 1]) for i in steps(range(len(x)), "int8 features")]) if len(x) else
               np.zeros((0, feature_model.output_shape[-1]), np.float32) for x in images]
    seconds = time.perf_counter() - t
    log(f"[int8] the frozen base quantized as the exporter will, features of {sum(len(x) for x in images)} images "
        f"in {seconds:.0f} s")
    return out, seconds


def relative_error(float_features: np.ndarray, int8: np.ndarray) -> dict:
    """The int8 error of each feature over its spread across images: median and 90th percentile."""
    spread = float_features.std(0)
    err = np.sqrt(((int8 - float_features) ** 2).mean(0))
    ratio = err[spread > 0] / spread[spread > 0]
    return {"median": round(float(np.median(ratio)), 3), "p90": round(float(np.percentile(ratio, 90)), 3)}
