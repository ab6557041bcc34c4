"""Keras -> ONNX (opset 17) with tf2onnx; float16 by conversion, int8 by ONNX Runtime static QDQ.

Never onnxruntime's dynamic quantization: for CNNs it quantizes activations
per batch at run time, which is slow and inaccurate; static QDQ with
per-channel weights, calibrated on real images, is the right tool.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .graph import INPUT_NAME, serving_function, signature

OPSET = 17


def convert(model, precision: str, out_path: Path, calibration: np.ndarray | None, workdir: Path, log=print) -> Path:
    import tf2onnx

    fp32 = workdir / "model.fp32.onnx"
    tf2onnx.convert.from_function(
        serving_function(model), input_signature=signature(model), opset=OPSET, output_path=str(fp32)
    )
    if precision == "float32":
        fp32.replace(out_path)
    elif precision == "float16":
        _to_float16(fp32, out_path)
    elif precision == "int8":
        _quantize_static(fp32, out_path, calibration, workdir, log)
    return out_path


def _to_float16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(m, str(dst))


class _Reader:
    """onnxruntime CalibrationDataReader over raw-pixel images."""

    def __init__(self, images: np.ndarray, log):
        self.images, self.i, self.log = images, 0, log

    def get_next(self):
        if self.i >= len(self.images):
            return None
        img = self.images[self.i][None].astype(np.float32)
        self.i += 1
        if self.i % 50 == 0 or self.i == len(self.images):
            self.log(f"calibration: {self.i}/{len(self.images)} images")
        return {INPUT_NAME: img}

    def rewind(self):
        self.i = 0


def _quantize_static(src: Path, dst: Path, images: np.ndarray, workdir: Path, log) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = workdir / "model.pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre), str(dst), _Reader(images, log),
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
