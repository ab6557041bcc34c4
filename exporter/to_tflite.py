"""Keras -> TFLite at four precisions. Builtin ops only: a model that needs Flex ops fails here, not on the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import layer_bias
from .console import steps
from .errors import ExportError
from .graph import INPUT_NAME, write_saved_model
from .quant_recipe import tflite_nodes

# The converter's knobs per precision, as data. "int8" is full integer: every
# op must have an int8 kernel (TFLITE_BUILTINS_INT8), or conversion fails
# instead of silently leaving float islands in the graph; the only float ops are
# the few early layers quant_recipe names for a known backbone, kept on purpose.
RECIPES = {
    "float32": {"optimize": False, "float16": False, "integer_only": False},
    "float16": {"optimize": True, "float16": True, "integer_only": False},
    "dynamic": {"optimize": True, "float16": False, "integer_only": False},
    "int8": {"optimize": True, "float16": False, "integer_only": True},
}


def convert(model, precision: str, out_path: Path, calibration: np.ndarray | None, workdir: Path, log=print,
            io_dtype: str = "float32", keep_float: tuple[str, ...] = (), threads: int = 2,
            record: dict | None = None, correct_bias: bool = True) -> Path:
    """`keep_float`: int8 only, Keras layers whose ops stay float (exporter/quant_recipe.py). int8 files get
    every layer's bias corrected (exporter/layer_bias.py) unless `correct_bias` is off; `record`, where
    given, receives what that measured."""
    import tensorflow as tf

    recipe = RECIPES[precision]
    # The SavedModel route (Keras 3 ExportArchive): converting the Keras model
    # or a concrete function directly trips over resource variables in int8 calibration.
    saved = write_saved_model(model, workdir / "saved_model")
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serve"])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if recipe["optimize"]:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe["float16"]:
        conv.target_spec.supported_types = [tf.float16]
    if recipe["integer_only"]:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # uint8: raw pixels pass straight through (scale 1, zero point 0); int8: pixel - 128;
        # float32: the file quantizes on its own input and dequantizes its output.
        conv.inference_input_type = conv.inference_output_type = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io_dtype]
        conv.representative_dataset = _representative(calibration, log)
        calibrated, quantized = _calibrate_and_quantize(conv, keep_float, io_dtype, log)
        if correct_bias:
            quantized, what = layer_bias.correct_tflite(quantized, calibrated, calibration, workdir, threads=threads, log=log)
            if record is not None:
                record["bias_correction"] = what
        out_path.write_bytes(quantized)
    else:
        out_path.write_bytes(conv.convert())
    check_builtin_ops(out_path)
    return out_path


def _calibrate_and_quantize(conv, layers, io_dtype: str, log) -> tuple[bytes, bytes]:
    """(calibrated float graph, int8 file) with `layers`' ops denylisted: the two steps the converter runs
    inside convert(), split (as TFLite's quantization debugger does) so the quantizer can be told which ops
    stay float, and so the float graph is there to correct the int8 file against."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tflite_convert

    conv._experimental_calibrate_only = True
    calibrated = conv.convert()
    nodes = tflite_nodes(calibrated, layers) if layers else []
    if len(nodes) != len(layers):
        raise ExportError(f"Expected one op per float layer {list(layers)}. Received: {len(nodes)} ops {nodes}")
    dtype = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io_dtype]
    if layers:
        log(f"int8: {', '.join(layers)} kept in float (exporter/quant_recipe.py)")
    return calibrated, tflite_convert.mlir_quantize(calibrated, input_data_type=dtype, output_data_type=dtype,
                                                    denylisted_nodes=nodes)


def op_names(path: Path) -> list[str]:
    """The operator names in a .tflite file, read by the LiteRT interpreter (no allocation needed)."""
    from edge_core.runtimes import find_litert_interpreter, native_info_filtered

    Interpreter, _ = find_litert_interpreter()
    with native_info_filtered():
        interp = Interpreter(model_path=str(path))
    return [op["op_name"] for op in interp._get_ops_details()]


def check_builtin_ops(path: Path) -> None:
    """Refuse a file that needs Flex (Select TF) or custom ops: a device's LiteRT cannot run them.

    The converter is already restricted to builtins; this checks the result, so
    a converter change or a sabotaged recipe cannot slip a Flex op through.
    Builtin op names are UPPER_SNAKE ("CONV_2D"); Flex ops are "Flex<TfOp>"
    and custom ops carry their own CamelCase code.
    """
    bad = sorted({name for name in op_names(path) if name.startswith("Flex") or not name.isupper()})
    if bad:
        raise ExportError(f"Expected builtin TFLite ops only (no Flex/custom ops). Received: {bad} in {path.name}")


def _representative(images: np.ndarray, log):
    if images is None or not len(images):
        raise ExportError("Full-integer TFLite needs calibration images. Received: none")

    def gen():
        for img in steps(images, "calibration", log, every=50):
            # Raw 0-255 pixels as float32, exactly what the serving signature takes:
            # the model's own normalization layer runs inside the calibrated graph.
            yield {INPUT_NAME: img[None].astype(np.float32)}

    return gen
