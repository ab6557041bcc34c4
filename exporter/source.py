"""What to export: a trainer run folder, or a classifier from elsewhere (SOURCE_KINDS) plus a labels file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

from edge_server.bundle import sha256_file

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


def _load_saved_model(source: ModelSource):
    """A TensorFlow SavedModel directory, through its serving signature, as a Keras model (TFSMLayer)."""
    import keras
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(source.model_path))
    except Exception as e:
        raise ExportError(f"Could not load the SavedModel {source.model_path}: {_first_line(e)}") from None
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
    layer = keras.layers.TFSMLayer(str(source.model_path), call_endpoint=key)
    inp = keras.Input(tuple(spec.shape[1:]), name=in_name)
    out = layer(inp)  # a signature binds by keyword, but TFSMLayer passes one tensor through its flat signature
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return keras.Model(inp, out, name=source.model_path.name)


SERVING_SIGNATURE = "serving_default"

SOURCE_KINDS: dict[str, SourceKind] = {k.name: k for k in (
    SourceKind("keras", ".keras file (Keras 3)", lambda p: p.is_file() and p.suffix == ".keras", _keras_load),
    SourceKind("h5", "legacy Keras .h5/.hdf5 file", lambda p: p.is_file() and p.suffix in (".h5", ".hdf5"), _load_h5),
    SourceKind("saved_model", "TensorFlow SavedModel folder (its serving signature)",
               lambda p: p.is_dir() and (p / "saved_model.pb").is_file(), _load_saved_model),
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
