"""Last-layer bias correction for int8 exports of a frozen base + linear head.

Quantizing the base shifts its pooled features: part of the error is the same on every image
(a third of its energy on the shared clip-art set, a fifth on Tux Paint, measured at 224 px), and a
linear head turns a constant feature shift into a constant logit shift that flips every answer
near a tie the same way. Empirical bias correction (Nagel et al., "Data-Free Quantization", 2019)
measures that shift on the calibration images and subtracts its image in logit space from the
head's bias before the model is quantized:

    int8 logits = (f + e) W + b,  E[e] = e_bar   ->   b' = b - e_bar W   gives   E[int8 logits] = E[f W + b]

The shift is measured with the same converter and calibration images as the export itself, so it is
the shift of the file being published. The Keras model keeps its own bias: it stays the reference
the export is verified against.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

POOL_LAYER, HEAD_MODEL = "pool", "head"  # how trainer.heads.assemble names them
LINEAR_LAYERS = ("scores", "svm_decision")  # the head's Dense layer (logistic / SVM heads)


def linear_head(model):
    """(pooled-features model, the head's last Dense layer) of a model the trainer assembled with a linear
    head; None for any other model (a bring-your-own model, an fc head), which is exported as it is."""
    import keras

    try:
        pool, head = model.get_layer(POOL_LAYER), model.get_layer(HEAD_MODEL)
    except ValueError:
        return None
    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    if len(dense) != 1 or dense[0].name not in LINEAR_LAYERS:
        return None
    return keras.Model(model.inputs, pool.output, name="pooled_features"), dense[0]


def feature_shift(features_model, convert, fmt: str, calibration: np.ndarray, workdir: Path, threads: int) -> np.ndarray:
    """Mean (int8 - float) pooled features over the calibration images, through `convert`'s own int8 file."""
    from edge_core.runtimes import RuntimeOptions, open_runtime

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"features{'.tflite' if fmt == 'tflite' else '.onnx'}"
    convert(features_model, "int8", path, calibration, workdir, log=lambda m: None, io_dtype="float32")
    runtime = open_runtime(fmt, path, RuntimeOptions(threads=threads))
    quantized = np.concatenate([runtime.run(calibration[i : i + 1]) for i in range(len(calibration))])
    exact = np.concatenate([np.asarray(features_model(calibration[i : i + 64].astype(np.float32), training=False))
                            for i in range(0, len(calibration), 64)])
    return (quantized - exact).mean(0)


@contextlib.contextmanager
def corrected_bias(dense, shift: np.ndarray):
    """The Dense layer's bias lowered by shift @ W while the block runs (the int8 conversion), then restored."""
    kernel, bias = (np.asarray(w) for w in dense.get_weights())
    dense.set_weights([kernel, (bias - shift @ kernel).astype(bias.dtype)])
    try:
        yield float(np.abs(shift @ kernel).mean())
    finally:
        dense.set_weights([kernel, bias])
