"""Keras -> TFLite at four precisions. Builtin ops only: a model that needs Flex ops fails here, not on the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .graph import write_saved_model


def convert(model, precision: str, out_path: Path, calibration: np.ndarray | None, workdir: Path, log=print) -> Path:
    import tensorflow as tf

    saved = write_saved_model(model, workdir / "saved_model")
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serve"])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # uint8 in: raw pixels pass straight through (scale 1, zero point 0); uint8 out: scores.
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
        conv.representative_dataset = _representative(calibration, log)
    out_path.write_bytes(conv.convert())
    return out_path


def _representative(images: np.ndarray, log):
    def gen():
        for i, img in enumerate(images):
            if (i + 1) % 50 == 0 or i + 1 == len(images):
                log(f"calibration: {i + 1}/{len(images)} images")
            yield {"image": img[None].astype(np.float32)}

    return gen
