"""What to export: a trainer run folder, or a classifier from elsewhere (SOURCE_KINDS) plus a labels file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

from edge_core.bundle import sha256_file

from .errors import ExportError


@dataclass(frozen=True)
class SourceKind:
    """One kind of model file the exporter takes: how to recognise it and how to load it as a Keras model."""

    name: str
    description: str
    matches: Callable[[Path], bool]
    load: Callable[["ModelSource"], object]


@dataclass
class ModelSource:
    model_path: Path
    labels: list[str]
    run_dir: Path | None = None
    report: dict = field(default_factory=dict)
    split: dict | None = None  # the run's train/val file lists
    kind: str = "keras"  # a key of SOURCE_KINDS
    unsafe_deserialization: bool = False  # --unsafe-deserialization: Keras may run the file's Lambda code
    # Scores of the source itself for raw-model inputs, when the loaded Keras model is a conversion of it
    # (an ONNX file through onnx2tf): verification compares the export against this, not the conversion.
    reference: Callable | None = None
    workdir: Path | None = None  # scratch space of a conversion made while loading; removed with the export's

    @property
    def name(self) -> str:
        return self.report.get("name") or (self.run_dir.name if self.run_dir else self.model_path.stem)

    def sha256(self) -> str:
        if self.model_path.is_dir():  # a SavedModel: its graph file identifies it (variables change with it)
            return sha256_file(self.model_path / "saved_model.pb")
        return sha256_file(self.model_path)

    def load_model(self):
        return SOURCE_KINDS[self.kind].load(self)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _keras_load(source: ModelSource, hint: str = ""):
    import keras

    try:
        # safe_mode: a file from elsewhere cannot run arbitrary code (Lambda layers) on load,
        # unless its owner says it is trusted with --unsafe-deserialization.
        return keras.models.load_model(source.model_path, compile=False, safe_mode=not source.unsafe_deserialization)
    except Exception as e:
        msg = _first_line(e)
        if "safe_mode" in str(e) and not source.unsafe_deserialization:
            raise ExportError(
                f"Could not load the Keras model {source.model_path}: it contains a Lambda layer (arbitrary Python code), "
                "which is refused by default. Next step: if you trust the file, pass --unsafe-deserialization. "
                f"Received: {msg}"
            ) from None
        raise ExportError(f"Could not load the Keras model {source.model_path}: {msg}{hint}") from None


def _load_h5(source: ModelSource):
    # Keras 3 reads most legacy HDF5 models itself; when it cannot (custom objects, an old
    # layer config), the way out is to load it where it was written and re-save it.
    return _keras_load(source, hint=(
        ". Next step: load it with the TensorFlow/Keras that saved it and re-save it as .keras "
        "(python -c \"import tensorflow as tf; tf.keras.models.load_model('MODEL.h5').save('MODEL.keras')\"; "
        "with TensorFlow 2.16+ use the tf_keras package), then export the .keras file"))


def _load_saved_model(source: ModelSource, path: Path | None = None):
    """A TensorFlow SavedModel directory, through its serving signature, as a Keras model (TFSMLayer)."""
    import keras
    import tensorflow as tf

    path = path or source.model_path
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:
        raise ExportError(f"Could not load the SavedModel {path}: {_first_line(e)}") from None
    signatures = dict(loaded.signatures)
    key = SERVING_SIGNATURE if SERVING_SIGNATURE in signatures else next(iter(signatures), None)
    if key is None:
        raise ExportError(f"Expected a SavedModel with a serving signature. Received: {source.model_path} with no signatures. "
                          "Next step: save it with tf.saved_model.save(model, DIR, signatures=...) or model.export(DIR)")
    fn = signatures[key]
    inputs = fn.structured_input_signature[1]
    outputs = fn.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(
            f"Expected a serving signature with one image input and one output (class scores). Received: signature {key!r} "
            f"with inputs {sorted(inputs)} and outputs {sorted(outputs)}. Next step: export a signature that takes only the "
            "image and returns only the class scores"
        )
    (in_name, spec), = inputs.items()
    layer = keras.layers.TFSMLayer(str(path), call_endpoint=key)
    inp = keras.Input(tuple(spec.shape[1:]), name=in_name)
    out = layer(inp)  # a signature binds by keyword, but TFSMLayer passes one tensor through its flat signature
    if isinstance(out, dict):
        out = next(iter(out.values()))
    model = keras.Model(inp, out, name=source.model_path.stem)
    # A signature hides its layers, so the output activation cannot be read from them: take it from the
    # graph when the output is a Softmax/Sigmoid op, else it stays "linear" (scores are softmaxed when served).
    model._edgeport_activation = _activation_of_signature(fn)
    return model


# The op a graph's output ends with (TensorFlow and ONNX share these names) -> the activation it is.
OUTPUT_ACTIVATIONS = {"Softmax": "softmax", "Sigmoid": "sigmoid"}


def _activation_of_signature(fn) -> str | None:
    """softmax/sigmoid when the signature's output is that op (past Identity ops), else None."""
    op = fn.outputs[0].op
    while op.type in ("Identity", "IdentityN") and op.inputs:
        op = op.inputs[0].op
    return OUTPUT_ACTIVATIONS.get(op.type)


# onnx2tf runs in its own process: importing it sets TF_USE_LEGACY_KERAS=1 and TF_CPP_MIN_LOG_LEVEL for
# the whole process, which would switch tf.keras to Keras 2 under the rest of the export.
ONNX2TF_SCRIPT = (
    "import sys, onnx2tf; "
    "onnx2tf.convert(input_onnx_file_path=sys.argv[1], output_folder_path=sys.argv[2], non_verbose=True)"
)
ONNX2TF_INSTALL = ("pip install --no-deps onnx2tf==1.29.24 onnx-graphsurgeon==0.6.1 sng4onnx==2.0.1 tf-keras==2.21.0 psutil "
                   "(scripts/setup.sh does; --no-deps because onnx2tf 1.29 pins TensorFlow 2.19 and onnx2tf 2.x needs Python 3.12)")


def check_onnx_source(path: Path) -> dict:
    """One image input (NCHW as PyTorch exports, or NHWC) of a fixed square size, one (N, classes) output."""
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ExportError(f"Could not read the ONNX model {path}: {_first_line(e)}") from None
    init = {t.name for t in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in init]

    def dims(v):
        return [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]

    if len(inputs) != 1:
        raise ExportError(f"Expected an ONNX classifier with one image input. Received: {len(inputs)} inputs "
                          f"{[(i.name, dims(i)) for i in inputs]}. Next step: export a model that takes only the image")
    if len(m.graph.output) != 1:
        raise ExportError(f"Expected one output, the class scores (N, classes). Received: {len(m.graph.output)} outputs "
                          f"{[(o.name, dims(o)) for o in m.graph.output]}. Next step: export only the class scores")
    shape, out = dims(inputs[0]), dims(m.graph.output[0])
    layout = "NCHW" if len(shape) == 4 and shape[1] == 3 else "NHWC" if len(shape) == 4 and shape[3] == 3 else None
    if layout is None:
        raise ExportError(f"Expected an image input (N, 3, H, W) or (N, H, W, 3). Received: input {inputs[0].name!r} shaped {shape}")
    h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if h is None or w is None or h != w:
        raise ExportError(f"Expected an ONNX input of a fixed square size. Received: input {inputs[0].name!r} shaped {shape}. "
                          "Next step: export the ONNX file with a fixed input size (e.g. torch.onnx.export with a 1x3xSxS example)")
    if len(out) != 2:
        raise ExportError(f"Expected class scores shaped (N, classes). Received: output shaped {out}")
    last = next((n for n in m.graph.node if m.graph.output[0].name in n.output), None)
    activation = OUTPUT_ACTIVATIONS.get(last.op_type if last is not None else "", "linear")
    return {"input": inputs[0].name, "layout": layout, "size": int(h), "activation": activation}


class OnnxReference:
    """ONNX Runtime on the original file, fed what it expects: the verification reference for an ONNX source."""

    def __init__(self, path: Path, info: dict, preprocessing=None):
        from edge_core.runtimes import OnnxRuntime, RuntimeOptions

        self.session = OnnxRuntime(path, RuntimeOptions(threads=2)).session
        self.info, self.preprocessing = info, preprocessing

    def __call__(self, x):
        import numpy as np

        x = x.astype(np.float32)
        if self.preprocessing is not None:
            x = self.preprocessing.apply(x).astype(np.float32)
        if self.info["layout"] == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.concatenate([self.session.run(None, {self.info["input"]: x[i : i + 1]})[0] for i in range(len(x))])


# Elementwise ops a layout change passes through unchanged when their other input is one number.
SCALAR_ELEMENTWISE = {"Mul", "Add", "Sub", "Div"}


def for_onnx2tf(path: Path, info: dict, out: Path) -> Path:
    """The ONNX file as onnx2tf converts it, the same function: an NCHW input, per-channel constants 3-D.

    Each is a way tf2onnx writes Keras/TF models that onnx2tf 1.29 misreads: an NHWC input (onnx2tf
    reads every 4-D input as NCHW), and a (1, C, 1, 1) constant in Mul/Add/Sub/Div (a folded
    BatchNormalization), which it transposes to (1, 1, C, 1) against an NHWC tensor. ONNX broadcasts a
    (C, 1, 1) constant against (N, C, H, W) exactly as a (1, C, 1, 1) one, and onnx2tf reads it right."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    if info["layout"] == "NHWC":
        nhwc_to_nchw(m, info)
    g = m.graph
    users: dict[str, list] = {}
    for node in g.node:
        for i in node.input:
            users.setdefault(i, []).append(node)
    for t in g.initializer:
        dims = list(t.dims)
        if len(dims) == 4 and dims[0] == 1 and dims[2:] == [1, 1] and users.get(t.name) \
                and all(n.op_type in SCALAR_ELEMENTWISE for n in users[t.name]):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).reshape(dims[1:]), t.name))
    del g.value_info[:]  # shapes inferred before these changes; onnx2tf infers them again
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


def nhwc_to_nchw(m, info: dict) -> None:
    """An NHWC-input ONNX model (as tf2onnx writes Keras/TF models) made NCHW-input, in place.

    onnx2tf reads every 4-D input as NCHW; tf2onnx's graphs take NHWC and transpose to NCHW before
    their first convolution, after the scalar rescaling ops. The input becomes NCHW, and that first
    Transpose is moved up through those scalar ops to the input, where it cancels out. Where the graph
    starts otherwise, a Transpose to NHWC is put after the new input: the same function either way."""
    from onnx import helper, numpy_helper

    g = m.graph
    inp = next(i for i in g.input if i.name == info["input"])
    n, h, w, c = inp.type.tensor_type.shape.dim
    new_name = f"{inp.name}_nchw"
    new = helper.make_tensor_value_info(new_name, inp.type.tensor_type.elem_type,
                                        [d.dim_param or d.dim_value or "batch" for d in (n, c, h, w)])
    scalars = {t.name for t in g.initializer if numpy_helper.to_array(t).size == 1}
    scalars |= {node.output[0] for node in g.node if node.op_type == "Constant"
                and any(a.name == "value" and numpy_helper.to_array(a.t).size == 1 for a in node.attribute)}
    consumers = lambda name: [node for node in g.node if name in node.input]  # noqa: E731
    # Walk the chain of scalar ops from the input; if it ends in Transpose(0, 3, 1, 2), the chain runs on NCHW.
    chain, tensor = [], inp.name
    while len(users := consumers(tensor)) == 1 and users[0].op_type in SCALAR_ELEMENTWISE \
            and sum(i not in scalars for i in users[0].input) == 1:
        chain.append(users[0])
        tensor = users[0].output[0]
    users = consumers(tensor)
    perm = lambda node: list(next((a.ints for a in node.attribute if a.name == "perm"), []))  # noqa: E731
    if len(users) == 1 and users[0].op_type == "Transpose" and perm(users[0]) == [0, 3, 1, 2] and tensor not in [o.name for o in g.output]:
        first = users[0]
        for node in g.node:  # the Transpose's consumers read the chain's end (now NCHW) directly
            node.input[:] = [tensor if i == first.output[0] else i for i in node.input]
        g.node.remove(first)
        for node in g.node:
            node.input[:] = [new_name if i == inp.name else i for i in node.input]
    else:
        for node in g.node:
            node.input[:] = [new_name if i == inp.name else i for i in node.input]
        g.node.insert(0, helper.make_node("Transpose", [new_name], [inp.name], perm=[0, 2, 3, 1], name="edgeport_nchw_to_nhwc"))
    g.input.remove(inp)
    g.input.insert(0, new)


def _onnx2tf_failure(path: Path, output: str) -> str:
    """onnx2tf's error output -> one line: the ONNX op it failed at (name and type) and the reason."""
    import re

    lines = [l.strip() for l in output.splitlines() if l.strip()]
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in lines]
    op = next((l.split("onnx_op_name:", 1)[1].strip() for l in plain if "onnx_op_name:" in l), None)
    reason = next((l for l in reversed(plain) if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", l) and not l.startswith("raise")), None)
    detail = next((l for l in plain if l.startswith(("Dimensions", "Incompatible", "Shape", "Cannot"))), None)
    where = "at an ONNX op"
    if op:
        try:
            import onnx

            node = next((n for n in onnx.load(str(path), load_external_data=False).graph.node if n.name == op), None)
            where = f"at ONNX op {node.op_type if node is not None else '?'} {op!r}"
        except Exception:
            where = f"at ONNX op {op!r}"
    why = "; ".join(x.rstrip(".") for x in (reason, detail) if x) or (plain[-1] if plain else "no output")
    return f"{where}: {why[:300]}"


def _load_onnx(source: ModelSource):
    """ONNX -> TensorFlow SavedModel (NHWC input) through onnx2tf, then loaded like any SavedModel."""
    import atexit
    import importlib.util
    import shutil
    import subprocess
    import sys
    import tempfile

    info = check_onnx_source(source.model_path)
    if importlib.util.find_spec("onnx2tf") is None:
        raise ExportError(f"Converting an ONNX source needs onnx2tf. Received: it is not installed. Next step: {ONNX2TF_INSTALL}")
    source.workdir = Path(tempfile.mkdtemp(prefix="edgeport-onnx2tf-"))
    # The export removes it when done; this covers an error between loading and the export's own cleanup.
    atexit.register(shutil.rmtree, source.workdir, True)
    out = source.workdir / "saved_model"
    try:
        onnx_file = for_onnx2tf(source.model_path, info, source.workdir / "for_onnx2tf.onnx")
    except Exception as e:
        raise ExportError(f"Could not prepare {source.model_path.name} for onnx2tf (step: {info['layout']} input, "
                          f"per-channel constants): {_first_line(e)}") from None
    proc = subprocess.run([sys.executable, "-c", ONNX2TF_SCRIPT, str(onnx_file), str(out)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0 or not (out / "saved_model.pb").is_file():
        raise ExportError(f"onnx2tf could not convert {source.model_path.name} to TensorFlow (step: ONNX -> SavedModel) "
                          f"{_onnx2tf_failure(onnx_file, proc.stderr + proc.stdout)}. Next step: export the model to TFLite "
                          "from its own framework, or simplify the graph (onnxsim) and try again")
    model = _load_saved_model(source, out)
    model._edgeport_activation = info["activation"]
    source.reference = OnnxReference(source.model_path, info)
    return model


SERVING_SIGNATURE = "serving_default"

SOURCE_KINDS: dict[str, SourceKind] = {k.name: k for k in (
    SourceKind("keras", ".keras file (Keras 3)", lambda p: p.is_file() and p.suffix == ".keras", _keras_load),
    SourceKind("h5", "legacy Keras .h5/.hdf5 file", lambda p: p.is_file() and p.suffix in (".h5", ".hdf5"), _load_h5),
    SourceKind("saved_model", "TensorFlow SavedModel folder (its serving signature)",
               lambda p: p.is_dir() and (p / "saved_model.pb").is_file(), _load_saved_model),
    SourceKind("onnx", ".onnx file (NCHW as PyTorch exports, or NHWC), to TFLite through onnx2tf",
               lambda p: p.is_file() and p.suffix == ".onnx", _load_onnx),
)}


def read_labels(path: Path) -> list[str]:
    labels = [l.strip() for l in Path(path).read_text().splitlines() if l.strip()]
    if not labels:
        raise ExportError(f"Expected one label per line in {path}. Received: an empty file")
    return labels


def resolve_source(path: str | Path, labels: str | Path | None = None, unsafe_deserialization: bool = False) -> ModelSource:
    path = Path(path)
    if path.is_dir() and (path / "model.keras").is_file():  # a trainer run folder
        model = path / "model.keras"
        labels_path = Path(labels) if labels else path / "labels.txt"
        report = json.loads((path / "report.json").read_text()) if (path / "report.json").is_file() else {}
        split = json.loads((path / "split.json").read_text()) if (path / "split.json").is_file() else None
        if not labels_path.is_file():
            raise ExportError(f"Expected labels.txt in the run folder or --labels FILE. Received: {str(path)!r} without labels")
        return ModelSource(model, read_labels(labels_path), path, report, split, unsafe_deserialization=unsafe_deserialization)
    kind = next((k for k in SOURCE_KINDS.values() if k.matches(path)), None)
    if kind is None:
        accepted = "a trainer run folder, " + ", ".join(k.description for k in SOURCE_KINDS.values())
        what = "does not exist" if not path.exists() else "a folder without model.keras or saved_model.pb" if path.is_dir() else "unknown kind"
        raise ExportError(f"Expected {accepted}. Received: {str(path)!r} ({what})")
    if labels is None:
        raise ExportError(f"A {kind.description} needs --labels FILE (one class name per line). Received: {path.name} without labels")
    return ModelSource(path, read_labels(Path(labels)), kind=kind.name, unsafe_deserialization=unsafe_deserialization)
