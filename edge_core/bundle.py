"""The bundle: a folder with the model file and bundle.json, everything needed to serve it.

The exporter writes bundles through `write_bundle`; the server reads them
through `load_bundle`. Writing is atomic (atomic.py): the folder is assembled
under a temporary name beside the destination and renamed into place only
once complete, and an existing bundle of that name is replaced only after the
new one is whole. The model file's sha256 is recorded and checked on every load.

A bundle may hold the model at several precisions (`edgeport export --precision auto`): bundle.json's
`models` lists each file with its own precision, sha256, input/output and verification, and the
top-level fields describe the default entry (`model.tflite`), so a reader that knows nothing of
`models` serves that one. The server picks among them on the device (precision_choice.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import publish_dir, recover_interrupted, staging_path
# Module-level names for the two steps of a write, so a test can crash or stall a write at either.
from .atomic import fsync_dir as _fsync_dir
from .atomic import write_synced as _write_synced
from .errors import BundleError

SCHEMA_VERSION = 1
BUNDLE_JSON = "bundle.json"
# format -> model file name inside a bundle (and the suffix of a bare model file)
MODEL_FILES = {"tflite": "model.tflite", "onnx": "model.onnx"}
# What each `models` entry carries besides its file: the fields that differ between precisions.
ENTRY_FIELDS = ("precision", "input", "output", "verification", "export")
MAX_MODELS = 8


def entry_file(fmt: str, precision: str | None = None) -> str:
    """The file of a `models` entry: the default entry's is the single-precision name, the others carry
    their precision (model.float16.tflite), so one folder holds them all and old readers find theirs."""
    name = MODEL_FILES[fmt]
    if precision is None:
        return name
    stem, suffix = name.rsplit(".", 1)
    return f"{stem}.{precision}.{suffix}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Bundle:
    path: Path  # the bundle folder (or the bare model file's folder)
    model_path: Path
    meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "1"))

    @property
    def format(self) -> str:
        return self.meta["format"]

    @property
    def labels(self) -> list[str]:
        return self.meta["labels"]

    @property
    def input(self) -> dict:
        return self.meta["input"]

    @property
    def output(self) -> dict:
        return self.meta["output"]

    @property
    def precisions(self) -> list[str]:
        """Every precision the bundle holds; one for a single-precision bundle."""
        return [m["precision"] for m in self.meta.get("models") or []] or [self.meta.get("precision")]

    def with_precision(self, precision: str) -> "Bundle":
        """The same bundle, its top-level fields (model file, sha256, input, output, verification) those of one entry."""
        if precision == self.meta.get("precision") and not self.meta.get("models"):
            return self
        entry = next((m for m in self.meta.get("models") or [] if m["precision"] == precision), None)
        if entry is None:
            raise BundleError(f"Expected a precision this bundle holds, one of {self.precisions}. Received: {precision!r} for {self.path}")
        meta = {**self.meta, **{k: entry[k] for k in (*ENTRY_FIELDS, "model_file", "sha256") if k in entry}}
        return Bundle(self.path, self.path / entry["model_file"], meta)


def _read_tflite_metadata(path: Path) -> dict | None:
    from .tflite_metadata import read_tflite_metadata

    return read_tflite_metadata(path)


# format -> reader of the metadata a bare file of that format may carry about itself
FILE_METADATA_READERS = {"tflite": _read_tflite_metadata}


def _format_of(model_path: Path) -> str:
    for fmt, fname in MODEL_FILES.items():
        if model_path.suffix == Path(fname).suffix:
            return fmt
    raise BundleError(f"Expected a .tflite or .onnx model file. Received: {model_path.name}")


def load_bundle(path: str | Path, labels_path: str | Path | None = None, check_hash: bool = True) -> Bundle:
    """A bundle folder, or a bare .tflite/.onnx file plus an optional labels file."""
    path = Path(path)
    if not path.exists():
        # A writer killed between its two renames leaves the bundle set aside under a hidden name:
        # every reader puts it back (only if that writer is dead), not just the next export.
        try:
            recover_interrupted(path)
        except OSError:
            pass  # a read-only folder: report the bundle missing below
    if not path.exists():
        raise BundleError(f"Expected a bundle folder or a .tflite/.onnx file. Received: {str(path)!r} (does not exist)")
    if path.is_file():
        if (path.parent / BUNDLE_JSON).is_file():
            # Loading it bare would drop the bundle's labels and checks (the classes became class_0..2).
            raise BundleError(f"Expected the bundle folder, not the model file inside it. Received: {path.name!r} "
                              f"in a folder with {BUNDLE_JSON}; name the folder {path.parent.name!r}")
        return _bare_model(path, labels_path)
    meta_path = path / BUNDLE_JSON
    if not meta_path.is_file():
        raise BundleError(f"Expected {BUNDLE_JSON} in the bundle folder. Received: {str(path)!r} without it")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"Expected {BUNDLE_JSON} as JSON. Received: {meta_path} is not valid JSON ({e})") from None
    except RecursionError:
        raise BundleError(f"Expected {BUNDLE_JSON} as a bundle description. Received: {meta_path}, JSON nested too deeply") from None
    except ValueError as e:  # e.g. a number past Python's 4,300-digit limit
        raise BundleError(f"Expected {BUNDLE_JSON} as JSON. Received: {meta_path} is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    except OSError as e:
        raise BundleError(f"Expected a readable {BUNDLE_JSON}. Received: {meta_path} ({e.strerror})") from None
    if not isinstance(meta, dict):
        raise BundleError(f"Expected {BUNDLE_JSON} to hold a JSON object. Received: a JSON {type(meta).__name__} in {meta_path}")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"Expected bundle schema_version {SCHEMA_VERSION}. Received: {meta.get('schema_version')!r} in {meta_path}")
    missing = [k for k in ("name", "format", "model_file", "sha256", "labels", "input", "output") if k not in meta]
    if missing:
        raise BundleError(f"Expected {BUNDLE_JSON} with the fields {missing}. Received: {meta_path} without them")
    check_meta_types(meta, meta_path)
    model_file = meta["model_file"]
    if Path(model_file).name != model_file or model_file != MODEL_FILES.get(meta["format"]):
        raise BundleError(f"Expected model_file {MODEL_FILES.get(meta['format'])!r} for format {meta['format']!r}. Received: {model_file!r}")
    model_path = path / model_file
    if not model_path.is_file():
        what = "a folder" if model_path.is_dir() else "the bundle's model file is missing"
        raise BundleError(f"Expected the model file {model_file} in the bundle. Received: {model_path} ({what})")
    if check_hash:
        _check_sha256(model_path, meta["sha256"])
    if "models" in meta:
        _check_models(path, meta, meta_path, check_hash)
    return Bundle(path, model_path, meta)


def _check_sha256(file: Path, expected: str) -> None:
    try:
        actual = sha256_file(file)
    except OSError as e:
        raise BundleError(f"Expected a readable model file. Received: {file} ({e.strerror})") from None
    if actual != expected:
        raise BundleError(
            f"Expected {file.name} with the sha256 in {BUNDLE_JSON} ({expected[:16]}...). Received: "
            f"sha256 {actual[:16]}..., the file does not match bundle.json (changed or damaged): {file}"
        )


def _check_models(path: Path, meta: dict, meta_path: Path, check_hash: bool) -> None:
    """Every entry of `models`: a known precision once each, its own file named for it, present and matching its
    sha256; the default entry is the top-level one. The server may serve any of them, so all are checked."""
    models = meta["models"]
    if not isinstance(models, list) or not 1 <= len(models) <= MAX_MODELS or not all(isinstance(m, dict) for m in models):
        raise BundleError(f"Expected {BUNDLE_JSON} field 'models' to be a list of 1-{MAX_MODELS} objects. Received: {_brief(models)} in {meta_path}")
    seen = set()
    for i, m in enumerate(models):
        where = f"models[{i}] in {meta_path}"
        missing = [k for k in ("precision", "model_file", "sha256", "input", "output") if k not in m]
        if missing:
            raise BundleError(f"Expected {BUNDLE_JSON} models[{i}] with the fields {missing}. Received: {meta_path} without them")
        precision = m["precision"]
        if not isinstance(precision, str) or not re.fullmatch(r"[a-z0-9_]{1,32}", precision) or precision in seen:
            raise BundleError(f"Expected each precision once in {BUNDLE_JSON} 'models'. Received: {_brief(precision)} at {where}")
        seen.add(precision)
        check_meta_types({k: m[k] for k in ("sha256", "input", "output")}, where)
        for side in ("input", "output"):
            for key, (ok, what) in SIDE_TYPES.items():
                value = m[side].get(key)
                if value is not None and not ok(value):
                    raise BundleError(f"Expected {BUNDLE_JSON} field {side}.{key} to be {what}. Received: {_brief(value)} at {where}")
        is_default = precision == meta.get("precision")
        expected = entry_file(meta["format"], None if is_default else precision)
        if m["model_file"] != expected:
            raise BundleError(f"Expected model_file {expected!r} for the {precision} entry. Received: {_brief(m['model_file'])} at {where}")
        if is_default and m["sha256"] != meta["sha256"]:
            raise BundleError(f"Expected the {precision} entry's sha256 to be the top-level one. Received: {m['sha256'][:16]}... at {where}")
        file = path / m["model_file"]
        if not file.is_file():
            raise BundleError(f"Expected the model file {m['model_file']} in the bundle ({precision}). Received: {file} (missing)")
        if check_hash and not is_default:  # the default entry's file was checked above
            _check_sha256(file, m["sha256"])
    if meta.get("precision") not in seen:
        raise BundleError(f"Expected the top-level precision among 'models' {sorted(seen)}. Received: {_brief(meta.get('precision'))} in {meta_path}")


def _is_str(v) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 256


def _is_shape(v) -> bool:
    return isinstance(v, list) and len(v) <= 8 and all(d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in v)


# field -> (check, what it must be). The server indexes into these without further checks, so a wrong
# type would surface as a traceback (serve), a 500 (admin reload) or a dead SIGHUP thread.
META_TYPES = {
    "name": (_is_str, "a string of 1-256 characters"),
    "version": (lambda v: isinstance(v, (str, int)) and not isinstance(v, bool) and len(str(v)) <= 64, "a string or integer"),
    "format": (lambda v: isinstance(v, str) and v in MODEL_FILES, f"one of {sorted(MODEL_FILES)}"),
    "model_file": (_is_str, "a file name"),
    "sha256": (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None, "64 hex digits"),
    "labels": (lambda v: v is None or (isinstance(v, list) and 0 < len(v) <= 100_000
                                       and all(isinstance(x, str) and len(x) <= 1024 for x in v)),
               "a non-empty list of strings (or null)"),
    "input": (lambda v: isinstance(v, dict), "an object"),
    "output": (lambda v: isinstance(v, dict), "an object"),
    "precision": (lambda v: isinstance(v, str), "a string"),
}
SIDE_TYPES = {
    "shape": (_is_shape, "a list of integers (or null)"),
    "dtype": (lambda v: isinstance(v, str), "a string"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "activation": (lambda v: isinstance(v, str), "a string"),
}


def check_meta_types(meta: dict, where) -> None:
    """Every field the server reads has the type it expects: one line naming the first that does not."""
    for key, (ok, what) in META_TYPES.items():
        if key in meta and not ok(meta[key]):
            raise BundleError(f"Expected {BUNDLE_JSON} field {key!r} to be {what}. Received: {_brief(meta[key])} in {where}")
    for side in ("input", "output"):
        for key, (ok, what) in SIDE_TYPES.items():
            value = meta[side].get(key)
            if value is not None and not ok(value):
                raise BundleError(f"Expected {BUNDLE_JSON} field {side}.{key} to be {what}. Received: {_brief(value)} in {where}")


def _brief(value) -> str:
    kind = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), type(value).__name__)
    try:
        text = json.dumps(value)
    except (RecursionError, ValueError):
        text = "..."
    return f"{kind} {text[:40]}{'...' if len(text) > 40 else ''}"


def _bare_model(model_path: Path, labels_path) -> Bundle:
    """A model file from elsewhere: the runtime fills in input/output when it opens the file."""
    fmt = _format_of(model_path)
    labels = None
    if labels_path is not None:
        labels_path = Path(labels_path)
        if not labels_path.is_file():
            raise BundleError(f"Expected a labels file (one label per line). Received: {str(labels_path)!r} (not a file)")
        labels = [l.strip() for l in labels_path.read_text().splitlines() if l.strip()]
    # What the file says about itself (TFLite Model Metadata: normalization, labels): used where nothing was declared.
    file_meta = FILE_METADATA_READERS[fmt](model_path) if fmt in FILE_METADATA_READERS else None
    if labels is None and file_meta and file_meta.get("labels"):
        labels = file_meta["labels"]
    meta = {
        "schema_version": SCHEMA_VERSION,
        "name": model_path.stem,
        "version": "1",
        "format": fmt,
        "precision": "unknown",
        "model_file": model_path.name,
        "sha256": sha256_file(model_path),
        "labels": labels,  # None: "class_<i>" once the output size is known
        "input": None,
        "output": None,
        "bare": True,
        "file_metadata": file_meta,
    }
    return Bundle(model_path.parent, model_path, meta)


def write_bundle(dest: str | Path, model_src: str | Path, meta: dict, extra_files: dict[str, bytes] | None = None,
                 more_models: list[tuple[str | Path, dict]] | None = None) -> Path:
    """Atomically publish a bundle folder at `dest` holding a copy of `model_src` and bundle.json.

    `meta` is completed with schema_version, model_file, sha256 and created.
    `more_models`: (file, entry) for each further precision, the entry holding ENTRY_FIELDS; with them,
    bundle.json lists every file (the default, `model_src`, first) under `models`.
    An existing bundle at `dest` stays until the new one is complete.
    """
    dest = Path(dest)
    fmt = meta["format"]
    if fmt not in MODEL_FILES:
        raise BundleError(f"Expected a format in {sorted(MODEL_FILES)}. Received: format={fmt!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted(dest)
    tmp = staging_path(dest)
    tmp.mkdir()
    try:
        model_file = MODEL_FILES[fmt]
        shutil.copyfile(model_src, tmp / model_file)
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        full = {
            "schema_version": SCHEMA_VERSION,
            **meta,
            "model_file": model_file,
            "sha256": sha256_file(tmp / model_file),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if more_models:
            entries = [{k: full[k] for k in (*ENTRY_FIELDS, "model_file", "sha256") if k in full}]
            for src, entry in more_models:
                name = entry_file(fmt, entry["precision"])
                shutil.copyfile(src, tmp / name)
                entries.append({**{k: entry[k] for k in ENTRY_FIELDS if k in entry}, "model_file": name,
                                "sha256": sha256_file(tmp / name)})
            full["models"] = entries
        # bundle.json is written last: a folder without it never loads as a bundle.
        _write_synced(tmp / BUNDLE_JSON, json.dumps(full, indent=2).encode())
        _fsync_dir(tmp)
        publish_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
