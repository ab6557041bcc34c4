"""Keras -> ONNX (opset 17) with tf2onnx; float16 by conversion, int8 by ONNX Runtime static QDQ.

Never onnxruntime's dynamic quantization: for CNNs it quantizes activations
per batch at run time, which is slow and inaccurate; static QDQ with
per-channel weights, calibrated on real images, is the right tool.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import layer_bias
from .console import steps
from .errors import ExportError
from .graph import INPUT_NAME, OUTPUT_NAME, serving_function, signature
from .quant_recipe import onnx_nodes

OPSET = 17


def convert(model, precision: str, out_path: Path, calibration: np.ndarray | None, workdir: Path, log=print,
            io_dtype: str = "float32", keep_float: tuple[str, ...] = (), threads: int = 2,
            record: dict | None = None) -> Path:
    """`keep_float`: int8 only, Keras layers whose nodes stay float (exporter/quant_recipe.py). int8 files get
    every layer's bias corrected (exporter/layer_bias.py); `record`, where given, receives what that measured."""
    fp32 = workdir / "model.fp32.onnx"
    frozen_to_onnx(model, fp32)
    extra = {"keep_float": keep_float, "threads": threads, "record": record} if precision == "int8" else {}
    STEPS[precision](fp32, out_path, calibration, workdir, log, **extra)
    check_graph(out_path)
    return out_path


def frozen_to_onnx(model, path: Path) -> Path:
    """The serving function, frozen, -> ONNX with one input "image" and one output "probs".

    Not tf2onnx.convert.from_function: it makes every non-resource tensor the
    function captures a graph input. Keras 3 layers such as Normalization (all
    of EfficientNet, and every adapt() recipe) hold their mean and variance as
    captured eager tensors, so the ONNX file grew extra inputs
    ('.../normalization/Sub/y:0') and int8 calibration failed on them. Freezing
    first turns every capture, variable or tensor, into a Const, and only the
    signature's own input stays an input.
    """
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = serving_function(model).get_concrete_function(*signature(model))
    frozen = convert_variables_to_constants_v2(concrete)
    n_inputs = len(tf.nest.flatten(concrete.structured_input_signature))
    inputs = [t.name for t in frozen.inputs[:n_inputs]]
    outputs = [t.name for t in frozen.outputs]
    # tf2onnx's optimizers already push the NHWC<->NCHW Transposes out of the
    # graph: one Transpose is left, right after the input (see
    # benchmarks/bench_export.py for the count and the speed story).
    tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(), input_names=inputs, output_names=outputs, opset=OPSET, output_path=str(path),
        tensors_to_rename={inputs[0]: INPUT_NAME, outputs[0]: OUTPUT_NAME},
    )
    return path


def check_graph(path: Path) -> None:
    """The contract the server relies on: opset 17, one NHWC input named "image" with a dynamic batch."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    inputs = [i for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
    dims = [d.dim_param or d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
    problems = []
    if opset != OPSET:
        problems.append(f"opset {opset}")
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        problems.append(f"inputs {[i.name for i in inputs]}")
    elif len(dims) != 4 or not isinstance(dims[0], str) or dims[3] != 3:
        problems.append(f"input shape {dims}")
    if problems:
        raise ExportError(
            f"Expected opset {OPSET} and one input {INPUT_NAME!r} shaped (batch, H, W, 3) with a dynamic batch. "
            f"Received: {', '.join(problems)} in {path.name}"
        )


def _as_is(src: Path, dst: Path, calibration, workdir, log) -> None:
    src.replace(dst)


def _to_float16(src: Path, dst: Path, calibration=None, workdir=None, log=print) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(m, str(dst))


class _Reader:
    """onnxruntime CalibrationDataReader over raw-pixel images."""

    def __init__(self, images: np.ndarray, log):
        self.images, self.log = images, log
        self.rewind()

    def get_next(self):
        img = next(self.it, None)
        return None if img is None else {INPUT_NAME: img[None].astype(np.float32)}

    def rewind(self):
        self.it = steps(self.images, "calibration", self.log, every=50)


def _quantize_static(src: Path, dst: Path, images: np.ndarray, workdir: Path, log, keep_float=(), threads: int = 2,
                     record: dict | None = None) -> None:
    if images is None or not len(images):
        raise ExportError("ONNX int8 needs calibration images. Received: none")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = workdir / "model.pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    exclude = onnx_nodes(pre, keep_float) if keep_float else []  # the few early layers int8 keeps in float
    if keep_float:
        log(f"int8: {', '.join(keep_float)} kept in float ({len(exclude)} nodes; exporter/quant_recipe.py)")
    quantize_static(
        str(pre), str(dst), _Reader(images, log),
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
    )
    what = layer_bias.correct_onnx(dst, pre, images, threads=threads, log=log)
    if record is not None:
        record["bias_correction"] = what


# precision -> the step that turns the float32 graph into the published file
STEPS = {"float32": _as_is, "float16": _to_float16, "int8": _quantize_static}
