"""Per-layer bias correction of a TFLite int8 file: every conv's rounding shift, removed where it arises.

Rounding a layer's weights and inputs to int8 shifts the mean of its output channels a little; the next
layer adds its own shift to the one it receives, and through a MobileNetV2 base the shifts add up to a
third of the pooled features' int8 error (docs/training.md, "int8 of a transferred model"). Empirical
bias correction (Nagel et al., "Data-Free Quantization", 2019; Finkelstein et al., "Fighting
Quantization Bias With Bias", 2019) measures each layer's output against the float graph on real
images and lowers the layer's int32 bias by the mean difference, per output channel:

    int8 out = conv_q(x_q) + b_q,   shift_c = mean over images and positions of (int8 out - float out)_c
    b_q,c  <-  b_q,c - round(shift_c / bias_scale_c)

Only the bias changes: same ops, same kernels, same latency. Positions where either output sits at the
int8 range's end (a fused ReLU/ReLU6 clamps there) are left out of the mean: a clamp hides the shift.

Layers are corrected one after another, in graph order: a layer's shift is what it receives plus what it
adds, so it is measured only after every layer above it is corrected (correcting all layers from one
measurement corrects the received part twice: measured, agreement fell to 18%). Each layer costs one run
of the float and the int8 graph over the images, with every tensor kept (`keep_all_tensors`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

LINEAR_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}  # ops with an int32 bias input
IMAGES = 64  # calibration images measured per layer (the first ones of the calibration set)
BATCH = 8  # images per run: every tensor of the graph is kept, so memory grows with the batch
INT8 = 9  # TFLite's TensorType INT8


def _linear_int8_ops(model) -> list:
    """(output tensor, bias tensor) of each conv / fully connected op that has an int8 output and a bias.
    Ops left in float (exporter/quant_recipe.py) have float outputs and are skipped: they round nothing."""
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in model.operatorCodes]
    graph = model.subgraphs[0]
    return [(op.outputs[0], op.inputs[2]) for op in graph.operators
            if codes[op.opcodeIndex] in LINEAR_OPS and len(op.inputs) > 2 and op.inputs[2] >= 0
            and graph.tensors[op.outputs[0]].type == INT8]


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name


def _runtime(content: bytes, path: Path, threads: int):
    from edge_core.runtimes import LiteRTRuntime, RuntimeOptions, native_info_filtered

    path.write_bytes(content)
    with native_info_filtered(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*preserve_all_tensors")  # "for debugging": that is the use here
        return LiteRTRuntime(path, RuntimeOptions(threads=threads), keep_all_tensors=True)


def _mean_shift(int8_rt, float_rt, layer: tuple[int, int, int, float, int], images: np.ndarray) -> np.ndarray:
    """The mean (int8 - float) output per channel of one layer (int8 tensor, float tensor, bias, scale, zero
    point) over every position where neither output is at the int8 range's end."""
    qi, fi, _, scale, zp = layer
    lo, hi = (-128 - zp) * scale, (127 - zp) * scale
    total, count = 0.0, 0
    for start in range(0, len(images), BATCH):
        batch = images[start:start + BATCH].astype(np.float32)
        int8_rt.run(batch)
        float_rt.run(batch)
        q, f = int8_rt.tensor(qi).astype(np.int32), float_rt.tensor(fi)
        inside = (q > -128) & (q < 127) & (f > lo + scale / 2) & (f < hi - scale / 2)
        channels = q.shape[-1]
        total = total + np.where(inside, (q - zp) * scale - f, 0.0).reshape(-1, channels).sum(0)
        count = count + inside.reshape(-1, channels).sum(0)
    return total / np.maximum(count, 1)


def correct(quantized: bytes, calibrated: bytes, images: np.ndarray, workdir: Path, threads: int = 2, log=print) -> tuple[bytes, dict]:
    """The int8 file `quantized` with every int8 conv's bias corrected against `calibrated` (the float
    graph the quantizer started from: same tensor names). Returns (file bytes, a record for bundle.json)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(quantized))
    graph = model.subgraphs[0]
    float_rt = _runtime(calibrated, workdir / "layer-bias-float.tflite", threads)
    # The quantizer keeps the float graph's tensor names, but a name is not unique (a folded bias constant
    # can carry its op's name): the twin is the tensor of that name and shape. An op without one is left as is.
    float_index = {(d["name"], tuple(int(n) for n in d["shape"])): d["index"] for d in float_rt.interp.get_tensor_details()}
    layers = []
    for out, bias in _linear_int8_ops(model):
        t = graph.tensors[out]
        twin = float_index.get((_name(t), tuple(int(n) for n in t.shape)))
        if twin is not None:
            layers.append((out, twin, bias, float(t.quantization.scale[0]), int(t.quantization.zeroPoint[0])))
    images = images[:IMAGES]
    steps = []  # each layer's mean |shift| in quantization steps, as measured before its correction
    for layer in layers:
        int8_rt = _runtime(bytes(flatbuffer_utils.convert_object_to_bytearray(model)), workdir / "layer-bias-int8.tflite", threads)
        shift = _mean_shift(int8_rt, float_rt, layer, images)
        steps.append(float(np.abs(shift).mean() / layer[3]))
        tensor = graph.tensors[layer[2]]
        buf = model.buffers[tensor.buffer]
        b = np.frombuffer(bytes(bytearray(buf.data)), np.int32).astype(np.int64)
        b -= np.round(shift / np.asarray(tensor.quantization.scale, np.float64)).astype(np.int64)
        buf.data = np.frombuffer(np.clip(b, -2**31, 2**31 - 1).astype(np.int32).tobytes(), np.uint8)
    record = {"method": "per-layer", "layers": len(layers), "images": len(images),
              "mean_abs_shift_steps": round(float(np.mean(steps)), 3), "max_abs_shift_steps": round(float(np.max(steps)), 3)}
    log(f"bias correction: {len(layers)} int8 layers' biases corrected, one after another, on {len(images)} calibration "
        f"images; their outputs had shifted by {record['mean_abs_shift_steps']:.2f} quantization steps on average "
        f"(at most {record['max_abs_shift_steps']:.2f})")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), record
