"""TFLite Model Metadata, read from a .tflite file with no dependency: normalization and the labels file.

MediaPipe Model Maker and TFLite Model Maker classifiers carry what a server
needs inside the file: a "TFLITE_METADATA" entry in the model's flatbuffer
holds a ModelMetadata flatbuffer (tflite-support's metadata_schema.fbs, file
identifier "M001") whose input tensor has NormalizationOptions (mean, std) and
whose output tensor names a TENSOR_AXIS_LABELS file; that file is packed in a
zip archive appended to the .tflite.

tflite-support, the official reader, pins protobuf < 4 (TensorFlow 2.21 needs
a newer one) and is not needed on a device, so this module walks the few
flatbuffer tables it needs itself. Field numbers are those of the schemas
(a union takes two: its type, then its value).
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

METADATA_NAME = "TFLITE_METADATA"
NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union: NormalizationOptions
TENSOR_AXIS_LABELS = 2  # AssociatedFileType
IMAGE_PROPERTIES = 2  # ContentProperties union: FeatureProperties=1, ImageProperties=2
COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}

# Field numbers, per table.
MODEL = {"metadata_buffer": 5, "buffers": 4, "metadata": 6}
BUFFER = {"data": 0, "offset": 1, "size": 2}
METADATA = {"name": 0, "buffer": 1}
MODEL_METADATA = {"name": 0, "subgraph_metadata": 3, "associated_files": 6}
SUBGRAPH_METADATA = {"input_tensor_metadata": 2, "output_tensor_metadata": 3, "associated_files": 4}
TENSOR_METADATA = {"name": 0, "content": 3, "process_units": 4, "associated_files": 6}
CONTENT = {"properties_type": 0, "properties": 1}
IMAGE_PROPS = {"color_space": 0}
PROCESS_UNIT = {"options_type": 0, "options": 1}
NORMALIZATION = {"mean": 0, "std": 1}
ASSOCIATED_FILE = {"name": 0, "type": 2}


class _Table:
    """A flatbuffer table at `pos` in `buf`: just enough to read scalars, strings, vectors and sub-tables."""

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_size = struct.unpack_from("<H", buf, self.vtable)[0]

    @classmethod
    def root(cls, buf: bytes, at: int = 0) -> "_Table":
        return cls(buf, at + struct.unpack_from("<I", buf, at)[0])

    def _field(self, i: int) -> int | None:
        slot = 4 + 2 * i
        if slot >= self.vt_size:
            return None
        off = struct.unpack_from("<H", self.buf, self.vtable + slot)[0]
        return self.pos + off if off else None

    def _deref(self, at: int) -> int:
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def scalar(self, i: int, fmt: str, default=0):
        at = self._field(i)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def table(self, i: int) -> "_Table | None":
        at = self._field(i)
        return None if at is None else _Table(self.buf, self._deref(at))

    def _vector(self, i: int) -> tuple[int, int]:
        at = self._field(i)
        if at is None:
            return 0, 0
        start = self._deref(at)
        return struct.unpack_from("<I", self.buf, start)[0], start + 4

    def string(self, i: int) -> str | None:
        at = self._field(i)
        if at is None:
            return None
        start = self._deref(at)
        n = struct.unpack_from("<I", self.buf, start)[0]
        return self.buf[start + 4 : start + 4 + n].decode("utf-8", errors="replace")

    def bytes(self, i: int) -> bytes:
        n, start = self._vector(i)
        return self.buf[start : start + n]

    def floats(self, i: int) -> list[float]:
        n, start = self._vector(i)
        return list(struct.unpack_from(f"<{n}f", self.buf, start)) if n else []

    def tables(self, i: int) -> list["_Table"]:
        n, start = self._vector(i)
        return [_Table(self.buf, self._deref(start + 4 * k)) for k in range(n)]


def _metadata_bytes(model: bytes) -> bytes | None:
    root = _Table.root(model)
    buffers = root.tables(MODEL["buffers"])
    for entry in root.tables(MODEL["metadata"]):
        if entry.string(METADATA["name"]) != METADATA_NAME:
            continue
        index = entry.scalar(METADATA["buffer"], "I")
        if index >= len(buffers):
            return None
        buf = buffers[index]
        data = buf.bytes(BUFFER["data"])
        if not data:  # models over 2 GB keep buffers after the flatbuffer: offset and size into the file
            offset, size = buf.scalar(BUFFER["offset"], "Q"), buf.scalar(BUFFER["size"], "Q")
            data = model[offset : offset + size] if offset > 1 else b""
        return data or None
    return None


def _labels(path: Path, files: list[_Table]) -> tuple[str | None, list[str] | None]:
    for f in files:
        if f.scalar(ASSOCIATED_FILE["type"], "b") != TENSOR_AXIS_LABELS:
            continue
        name = f.string(ASSOCIATED_FILE["name"])
        try:
            with zipfile.ZipFile(path) as z:
                text = z.read(name).decode("utf-8", errors="replace")
        except (zipfile.BadZipFile, KeyError, OSError):
            return name, None
        return name, [l.strip() for l in text.splitlines() if l.strip()]
    return None, None


def read_tflite_metadata(path: str | Path) -> dict | None:
    """{"name", "preprocessing": {"mean", "std", "color_order"} or None, "labels", "labels_file", "color_space"}, or None.

    None when the file carries no TFLite Model Metadata. A file whose metadata cannot be
    parsed is treated as having none: the caller then warns that nothing was declared.
    """
    path = Path(path)
    model = path.read_bytes()
    try:
        raw = _metadata_bytes(model)
        if raw is None or raw[4:8] != b"M001":
            return None
        meta = _Table.root(raw)
        subgraphs = meta.tables(MODEL_METADATA["subgraph_metadata"])
        if not subgraphs:
            return None
        sub = subgraphs[0]
        inputs = sub.tables(SUBGRAPH_METADATA["input_tensor_metadata"])
        outputs = sub.tables(SUBGRAPH_METADATA["output_tensor_metadata"])
        pre = color_space = None
        if inputs:
            for unit in inputs[0].tables(TENSOR_METADATA["process_units"]):
                if unit.scalar(PROCESS_UNIT["options_type"], "B") == NORMALIZATION_OPTIONS:
                    opts = unit.table(PROCESS_UNIT["options"])
                    mean, std = opts.floats(NORMALIZATION["mean"]), opts.floats(NORMALIZATION["std"])
                    if mean and std:  # one value stands for every channel (the schema says so)
                        pre = {"mean": (mean * 3)[:3] if len(mean) == 1 else mean[:3],
                               "std": (std * 3)[:3] if len(std) == 1 else std[:3], "color_order": "RGB"}
            content = inputs[0].table(TENSOR_METADATA["content"])
            if content is not None and content.scalar(CONTENT["properties_type"], "B") == IMAGE_PROPERTIES:
                props = content.table(CONTENT["properties"])
                color_space = COLOR_SPACES.get(props.scalar(IMAGE_PROPS["color_space"], "b") if props else 0, "UNKNOWN")
        files = (outputs[0].tables(TENSOR_METADATA["associated_files"]) if outputs else []) \
            + sub.tables(SUBGRAPH_METADATA["associated_files"]) + meta.tables(MODEL_METADATA["associated_files"])
        labels_file, labels = _labels(path, files)
    except (struct.error, IndexError, UnicodeDecodeError):
        return None
    return {"name": meta.string(MODEL_METADATA["name"]), "preprocessing": pre, "labels": labels,
            "labels_file": labels_file, "color_space": color_space}
