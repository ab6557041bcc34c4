"""Runtimes behind one small interface: LiteRT (TFLite) and ONNX Runtime.

A Runtime opens one model file and maps a batch of raw uint8 RGB pixels
(N, H, W, 3) to float32 scores (N, units), handling the model's own input and
output quantization. One instance is not thread-safe; the pool gives each
request its own. `threads` is always passed: LiteRT defaults to one thread.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EdgeError

# LiteRT interpreters in order of preference. TensorFlow's own is last, and
# only if TensorFlow is installed: a device never needs it.
LITERT_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")


@dataclass
class TensorSpec:
    name: str
    shape: list  # -1 or None for a dynamic dimension
    dtype: str  # numpy dtype name
    scale: float = 0.0  # quantization; 0 = not quantized
    zero_point: int = 0

    def to_dict(self) -> dict:
        d = {"name": self.name, "shape": self.shape, "dtype": self.dtype}
        if self.scale:
            d["quantization"] = {"scale": self.scale, "zero_point": self.zero_point}
        return d


@dataclass
class RuntimeOptions:
    threads: int = 2
    onnx_providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    onnx_mem_arena: bool = True
    trt_cache_dir: str | None = None


def _quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        return x.astype(dtype, copy=False)
    if spec.scale and not (dtype == np.uint8 and x.dtype == np.uint8 and abs(spec.scale - 1.0) < 1e-3 and spec.zero_point == 0):
        info = np.iinfo(dtype)
        q = np.round(x.astype(np.float32) / spec.scale + spec.zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)  # raw uint8 pixels already are the model's input


def _dequantize(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.scale and np.dtype(spec.dtype).kind in "iu":
        return (y.astype(np.float32) - spec.zero_point) * spec.scale
    return y.astype(np.float32, copy=False)


@contextlib.contextmanager
def native_info_filtered(drop: tuple[str, ...] = ("INFO: ",)):
    """Drop the "INFO: ..." lines native code writes to fd 2 meanwhile; pass every other line on.

    LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from C++ each time
    an interpreter is made, straight to file descriptor 2, where Python's logging cannot filter
    it. Before a one-line CLI error it is noise; its warnings and errors are not, so only
    INFO lines are dropped (`drop`: the line prefixes to drop).
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (an embedded interpreter): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            rest = [l for l in captured.read().decode(errors="replace").splitlines(True) if not l.startswith(drop)]
            if rest:
                sys.stderr.write("".join(rest))
                sys.stderr.flush()


def find_litert_interpreter():
    """The first LiteRT Interpreter class that imports, with its module name."""
    for name in LITERT_MODULES:
        if name == "tensorflow.lite" and importlib.util.find_spec("tensorflow") is None:
            continue
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        return mod.Interpreter, name
    raise EdgeError("No LiteRT runtime is installed. Expected one of: pip install ai-edge-litert (or tflite-runtime)")


class LiteRTRuntime:
    format = "tflite"

    def __init__(self, model_path: Path, options: RuntimeOptions, keep_all_tensors: bool = False):
        """`keep_all_tensors`: every intermediate tensor stays readable after a run (`tensor`), for tools
        that compare a file layer by layer; it costs memory, so serving never sets it."""
        Interpreter, self.backend = find_litert_interpreter()
        extra = {"experimental_preserve_all_tensors": True} if keep_all_tensors else {}
        try:
            with native_info_filtered():
                self.interp = Interpreter(model_path=str(model_path), num_threads=max(1, int(options.threads)), **extra)
                self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise EdgeError(f"Expected a TFLite model LiteRT can load. Received: {model_path} ({str(e).strip().splitlines()[0]})") from None
        i, o = self.interp.get_input_details()[0], self.interp.get_output_details()[0]
        self._in_index, self._out_index = i["index"], o["index"]
        self.input = self._spec(i)
        self.output = self._spec(o)
        self._batch = int(i["shape"][0])

    @staticmethod
    def _spec(d) -> TensorSpec:
        shape = [int(s) for s in d.get("shape_signature", d["shape"])]
        scale, zp = d.get("quantization", (0.0, 0))
        return TensorSpec(d["name"], shape, np.dtype(d["dtype"]).name, float(scale), int(zp))

    def run(self, pixels: np.ndarray) -> np.ndarray:
        x = _quantize(pixels, self.input)
        if x.shape[0] != self._batch:  # resize once per new batch size, then reuse
            self.interp.resize_tensor_input(self._in_index, list(x.shape))
            self.interp.allocate_tensors()
            self._batch = x.shape[0]
        self.interp.set_tensor(self._in_index, x)
        self.interp.invoke()
        return _dequantize(self.interp.get_tensor(self._out_index), self.output)

    def tensor(self, index: int) -> np.ndarray:
        """Tensor `index` of the last run, as stored (int8 stays int8); needs keep_all_tensors for intermediates."""
        return self.interp.get_tensor(index)


class OnnxRuntime:
    format = "onnx"
    backend = "onnxruntime"

    def __init__(self, model_path: Path, options: RuntimeOptions):
        try:
            import onnxruntime as ort
        except ImportError:
            raise EdgeError("ONNX Runtime is not installed. Expected: pip install onnxruntime (or onnxruntime-gpu on Jetson)") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(options.threads))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # ALL, not BASIC/EXTENDED: on x86 it adds the NCHWc layout transformer
        # (blocked AVX2/AVX-512 conv kernels with fused Relu6), which makes
        # MobileNetV2 ~2.5x faster than the other levels (benchmarks/bench_export.py).
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No spin-waiting: ORT's intra-op workers otherwise busy-wait after each
        # run, which on a small board (or any oversubscribed CPU, or a pool of
        # sessions in one process) steals the cores the next run needs; measured
        # here, that made ONNX float32 3-4x slower than TFLite under load.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.enable_cpu_mem_arena = options.onnx_mem_arena
        so.log_severity_level = 3
        available = set(ort.get_available_providers())
        providers = []
        for p in options.onnx_providers:
            if p not in available:
                continue
            if p == "TensorrtExecutionProvider" and options.trt_cache_dir:
                providers.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": options.trt_cache_dir}))
            else:
                providers.append(p)
        providers = providers or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(model_path), so, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise EdgeError(f"Expected an ONNX model ONNX Runtime can load. Received: {model_path} ({str(e).strip().splitlines()[0]})") from None
        self.providers = self.session.get_providers()
        i, o = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input = TensorSpec(i.name, [d if isinstance(d, int) else -1 for d in i.shape], _ort_dtype(i.type))
        self.output = TensorSpec(o.name, [d if isinstance(d, int) else -1 for d in o.shape], _ort_dtype(o.type))
        self._out_name = o.name

    def run(self, pixels: np.ndarray) -> np.ndarray:
        x = _quantize(pixels, self.input)
        return self.session.run([self._out_name], {self.input.name: x})[0].astype(np.float32, copy=False)


def _ort_dtype(t: str) -> str:
    return {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(float16)": "float16"}.get(t, t)


RUNTIMES = {"tflite": LiteRTRuntime, "onnx": OnnxRuntime}


def open_runtime(fmt: str, model_path: Path, options: RuntimeOptions):
    try:
        cls = RUNTIMES[fmt]
    except KeyError:
        raise EdgeError(f"Expected a model format in {sorted(RUNTIMES)}. Received: {fmt!r}") from None
    return cls(Path(model_path), options)
