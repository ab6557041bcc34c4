"""Per-layer bias correction of int8 files (TFLite and ONNX QDQ): every conv's rounding shift, removed where it arises.

Rounding a layer's weights and inputs to int8 shifts the mean of its output channels a little; the next
layer adds its own shift to the one it receives, and through a MobileNetV2 base the shifts add up to a
third of the pooled features' int8 error (docs/training.md, "int8 of a transferred model"). Empirical
bias correction (Nagel et al., "Data-Free Quantization", 2019; Finkelstein et al., "Fighting
Quantization Bias With Bias", 2019) measures each layer's output against the float graph on real
images and lowers the layer's int32 bias by the mean difference, per output channel:

    int8 out = conv_q(x_q) + b_q,   shift_c = mean over images and positions of (int8 out - float out)_c
    b_q,c  <-  b_q,c - round(shift_c / bias_scale_c)

Only the bias changes: same ops, same kernels, same latency. The exported model's own reference (the Keras
model the bundle verifies against) is untouched. Positions where either output sits at the
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


def _channel_sums(diff: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (last axis): the sum of `diff` over the positions `inside`, and how many there were."""
    channels = diff.shape[-1]
    return np.where(inside, diff, 0.0).reshape(-1, channels).sum(0), inside.reshape(-1, channels).sum(0)


def _lowered(bias: np.ndarray, shift: np.ndarray, bias_scale: np.ndarray) -> np.ndarray:
    """An int32 bias lowered by `shift` (in output units; `bias_scale` per channel), kept inside int32."""
    b = bias.astype(np.int64) - np.round(shift / np.asarray(bias_scale, np.float64)).astype(np.int64)
    return np.clip(b, -2**31, 2**31 - 1).astype(np.int32)


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
        sums, n = _channel_sums((q - zp) * scale - f, inside)
        total, count = total + sums, count + n
    return total / np.maximum(count, 1)


def correct_tflite(quantized: bytes, calibrated: bytes, images: np.ndarray, workdir: Path, threads: int = 2, log=print) -> tuple[bytes, dict]:
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
        bias = _lowered(np.frombuffer(bytes(bytearray(buf.data)), np.int32), shift, tensor.quantization.scale)
        buf.data = np.frombuffer(bias.tobytes(), np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), _record(steps, len(images), log)


def _record(steps: list[float], images: int, log) -> dict:
    """What bundle.json keeps of a correction, said in one line: each layer's shift as found, in quantization steps."""
    record = {"method": "per-layer", "layers": len(steps), "images": images,
              "mean_abs_shift_steps": round(float(np.mean(steps)), 3) if steps else 0.0,
              "max_abs_shift_steps": round(float(np.max(steps)), 3) if steps else 0.0}
    log(f"bias correction: {len(steps)} int8 layers' biases corrected, one after another, on {images} calibration "
        f"images; their outputs had shifted by {record['mean_abs_shift_steps']:.2f} quantization steps on average "
        f"(at most {record['max_abs_shift_steps']:.2f})")
    return record


# --- ONNX (QDQ): the same correction on the int32 bias initializers ------------------------------------------


def _onnx_layers(qdq) -> list[tuple[str, str, str, tuple | None]]:
    """(output, int32 bias initializer, its scale initializer, (scale, zero point) of the QuantizeLinear that
    rounds the output, or None) of each Conv / Gemm whose bias is dequantized from int32, in graph order
    (ONNX stores nodes topologically). The output is read before that QuantizeLinear: a fused ReLU/Clip has
    become its range, so positions outside the range are left out of the mean, as in TFLite."""
    from onnx import TensorProto, numpy_helper

    g = qdq.graph
    inits = {i.name: i for i in g.initializer}
    producer = {out: n for n in g.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def requantized_range(name: str, hops: int = 2):
        for n in consumers.get(name, []):
            if n.op_type == "QuantizeLinear":
                return float(numpy_helper.to_array(inits[n.input[1]])), int(numpy_helper.to_array(inits[n.input[2]]))
            if hops and n.op_type in ("Relu", "Clip"):
                return requantized_range(n.output[0], hops - 1)
        return None

    layers = []
    for n in g.node:
        dq = producer.get(n.input[2]) if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 else None
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits \
                and inits[dq.input[0]].data_type == TensorProto.INT32:
            layers.append((n.output[0], dq.input[0], dq.input[1], requantized_range(n.output[0])))
    return layers


def correct_onnx(qdq_path: Path, float_path: Path, images: np.ndarray, threads: int = 2, log=print) -> dict:
    """Rewrite the QDQ file `qdq_path` with every int8 Conv / Gemm bias corrected against `float_path` (the
    float graph the quantizer started from: same node output names). Returns a record for bundle.json.

    Each layer's output is fetched as an extra graph output, which keeps ONNX Runtime from fusing that
    Q/DQ pair into an integer kernel: the measured output is the integer kernel's exact accumulation
    (dequantized inputs and weights, int32 bias) before requantization."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from .graph import INPUT_NAME

    qdq = onnx.load(str(qdq_path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.log_severity_level = 3
    float_model = onnx.load(str(float_path))
    float_names = {o for n in float_model.graph.node for o in n.output}
    layers = [layer for layer in _onnx_layers(qdq) if layer[0] in float_names]
    images = images[:IMAGES]
    if not layers:
        return _record([], len(images), log)

    def session(model, outputs):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        del m.graph.output[:]
        m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in outputs)
        return ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])

    reference = session(float_model, [layer[0] for layer in layers])
    inits = {i.name: i for i in qdq.graph.initializer}
    steps = []
    for out, bias, bias_scale, out_range in layers:
        probe = session(qdq, [out])
        total, count = 0.0, 0
        for start in range(0, len(images), BATCH):
            feed = {INPUT_NAME: images[start:start + BATCH].astype(np.float32)}
            got, want = probe.run([out], feed)[0], reference.run([out], feed)[0]
            inside = np.ones(want.shape, bool)
            if out_range is not None:  # activations are uint8 (to_onnx quantizes them QUInt8): 0..255
                scale, zp = out_range
                inside = (want > (0 - zp) * scale + scale / 2) & (want < (255 - zp) * scale - scale / 2)
            diff = got - want
            if got.ndim == 4:  # NCHW: channels last, to sum per channel
                diff, inside = np.moveaxis(diff, 1, -1), np.moveaxis(inside, 1, -1)
            sums, n = _channel_sums(diff, inside)
            total, count = total + sums, count + n
        shift = total / np.maximum(count, 1)
        scale_c = numpy_helper.to_array(inits[bias_scale]).astype(np.float64)
        inits[bias].CopyFrom(numpy_helper.from_array(_lowered(numpy_helper.to_array(inits[bias]), shift, scale_c), bias))
        steps.append(float(np.abs(shift).mean() / (out_range[0] if out_range else np.abs(scale_c).mean())))
    onnx.save(qdq, str(qdq_path))
    return _record(steps, len(images), log)
