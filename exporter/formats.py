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


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    runtime: str  # what runs it on the device
    precisions: dict[str, Precision]


def _p(name, calibrated, floor, description):
    return name, Precision(name, calibrated, floor, description)


FORMATS: dict[str, Format] = {
    "tflite": Format(
        "tflite", ".tflite", "LiteRT (ai-edge-litert / tflite-runtime)",
        dict([
            _p("float32", False, 0.99, "no quantization"),
            _p("float16", False, 0.98, "float16 weights, float32 compute"),
            _p("dynamic", False, 0.95, "int8 weights, activations quantized on the fly"),
            _p("int8", True, 0.93, "full integer: int8 weights and activations, uint8 input/output, calibrated"),
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


def allowed_combinations() -> list[str]:
    return [f"{f}/{p}" for f, spec in FORMATS.items() for p in spec.precisions]


def lookup(fmt: str, precision: str) -> tuple[Format, Precision]:
    if fmt not in FORMATS or precision not in FORMATS[fmt].precisions:
        raise ExportError(
            f"Unsupported format/precision; expected one of {allowed_combinations()}. Received: {fmt}/{precision}"
        )
    return FORMATS[fmt], FORMATS[fmt].precisions[precision]
