"""The format capability table: which format takes which precision, with what defaults.

A combination the table does not allow is an error listing the allowed ones;
nothing is silently rewritten (unlike exporters that quietly drop int8 for a
format that cannot take it).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ExportError


@dataclass(frozen=True)
class Precision:
    name: str
    calibrated: bool  # needs representative images
    min_agreement: float  # default floor on top-1 agreement with the Keras model
    description: str
    # Input/output tensor types the file may have; the first is the default.
    # Only full-integer TFLite offers a choice: uint8 lets raw pixels in with
    # no arithmetic (scale 1, zero point 0); int8 suits accelerators that only
    # take signed tensors; float32 keeps float I/O around an integer body.
    io_dtypes: tuple[str, ...] = ("float32",)


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    runtime: str  # what runs it on the device
    precisions: dict[str, Precision]


def _p(name, calibrated, floor, description, io_dtypes=("float32",)):
    return name, Precision(name, calibrated, floor, description, tuple(io_dtypes))


FORMATS: dict[str, Format] = {
    "tflite": Format(
        "tflite", ".tflite", "LiteRT (ai-edge-litert / tflite-runtime)",
        dict([
            _p("float32", False, 0.99, "no quantization"),
            _p("float16", False, 0.98, "float16 weights, float32 compute"),
            _p("dynamic", False, 0.95, "int8 weights, activations quantized on the fly"),
            _p("int8", True, 0.93, "full integer: int8 weights and activations, calibrated; uint8 (default), int8 or float32 input/output",
               io_dtypes=("uint8", "int8", "float32")),
        ]),
    ),
    "onnx": Format(
        "onnx", ".onnx", "ONNX Runtime",
        dict([
            _p("float32", False, 0.99, "no quantization, opset 17"),
            _p("float16", False, 0.98, "float16 weights and compute, float32 input/output"),
            _p("int8", True, 0.93, "static QDQ, per-channel int8 weights, calibrated"),
        ]),
    ),
}


# `--precision auto`: every precision of the format that passes its floor goes into one bundle, and the
# device times them when it starts (edge_core/precision_choice.py).
AUTO = "auto"


def auto_precisions(fmt: str) -> list[str]:
    """The precisions `auto` tries, the smallest file first: the first that passes is the bundle's default
    entry, the one a reader that knows a single model file serves."""
    if fmt not in FORMATS:
        raise ExportError(f"Unsupported format; expected one of {sorted(FORMATS)}. Received: {fmt}")
    return list(reversed(FORMATS[fmt].precisions))


def allowed_combinations() -> list[str]:
    return [f"{f}/{p}" for f, spec in FORMATS.items() for p in spec.precisions]


def allowed_io_dtypes() -> list[str]:
    return [f"{f}/{p}: {', '.join(spec.io_dtypes)}" for f, fspec in FORMATS.items() for p, spec in fspec.precisions.items()]


def resolve_io_dtype(fmt: str, precision: str, io_dtype: str | None) -> str:
    """The I/O type for this row: the row's default, or the one asked for if the row allows it."""
    _, prec = lookup(fmt, precision)
    if io_dtype is None:
        return prec.io_dtypes[0]
    if io_dtype not in prec.io_dtypes:
        raise ExportError(
            f"Unsupported input/output type for {fmt}/{precision}; expected one of {list(prec.io_dtypes)} "
            f"(all rows: {'; '.join(allowed_io_dtypes())}). Received: io_dtype={io_dtype!r}"
        )
    return io_dtype


def lookup(fmt: str, precision: str) -> tuple[Format, Precision]:
    if fmt not in FORMATS or precision not in FORMATS[fmt].precisions:
        raise ExportError(
            f"Unsupported format/precision; expected one of {allowed_combinations()}. Received: {fmt}/{precision}"
        )
    return FORMATS[fmt], FORMATS[fmt].precisions[precision]
