"""What a model expects in its input tensor, declared (never guessed): value range or mean/std, colour order.

Every edgeport bundle takes raw 0-255 RGB: on export, the declared
preprocessing is folded into the graph. A bare .tflite/.onnx from elsewhere
may expect [0, 1], [-1, 1], ImageNet mean/std or BGR; for such a file the
server applies what was declared (flags) or read (TFLite Model Metadata) to
the decoded 0-255 RGB pixels, before the runtime quantizes them.

One formula covers every case, as TFLite Model Metadata writes it:
model_input = (pixels[..., order] - mean) / std, with mean and std in 0-255
pixel units per channel.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from .errors import EdgeError

# --input-range NAME -> (mean, std) in pixel units: the affine map from 0-255 onto that range.
RANGES = {
    "0-255": (0.0, 1.0),
    "0-1": (0.0, 255.0),
    "-1-1": (127.5, 127.5),
}
# argparse reads "--input-range -1-1" as a flag followed by another flag; "--input-range=-1-1" works, and so does this.
RANGE_ALIASES = {"minus1-1": "-1-1"}
COLOR_ORDERS = {"RGB": (0, 1, 2), "BGR": (2, 1, 0)}


@dataclass(frozen=True)
class Preprocessing:
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    color_order: str = "RGB"
    # "declared" (flags), "metadata" (read from the file), "none" (nothing declared: raw 0-255 RGB)
    origin: str = "none"

    @property
    def identity(self) -> bool:
        return self.color_order == "RGB" and self.mean == (0.0, 0.0, 0.0) and self.std == (1.0, 1.0, 1.0)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) 0-255 RGB -> what the model's input expects (float32); unchanged when identity."""
        if self.identity:
            return pixels
        x = pixels[..., list(COLOR_ORDERS[self.color_order])].astype(np.float32)
        return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) with model_input = pixels @ W + b: the same map as one 3x3 matrix, for folding into a graph."""
        w = np.zeros((3, 3), np.float32)
        for out_ch, in_ch in enumerate(COLOR_ORDERS[self.color_order]):
            w[in_ch, out_ch] = 1.0 / self.std[out_ch]
        b = -np.asarray(self.mean, np.float32) / np.asarray(self.std, np.float32)
        return w, b

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "color_order": self.color_order, "origin": self.origin,
                "value_range": self.value_range()}

    def value_range(self) -> list[float]:
        """The model-input range raw 0-255 maps onto (per the first channel): [0, 1] for --input-range 0-1."""
        return [round(-self.mean[0] / self.std[0], 4) + 0.0, round((255.0 - self.mean[0]) / self.std[0], 4) + 0.0]  # + 0.0: no -0.0

    def describe(self) -> str:
        for name, (m, s) in RANGES.items():
            if self.mean == (m,) * 3 and self.std == (s,) * 3:
                return f"{self.color_order}, pixels mapped to {name}"
        return f"{self.color_order}, (pixel - mean {list(self.mean)}) / std {list(self.std)}"


def _triple(text: str, flag: str) -> tuple[float, float, float]:
    try:
        vals = [float(v) for v in str(text).replace(" ", "").split(",") if v != ""]
    except ValueError:
        vals = []
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise EdgeError(f"Expected {flag} as one number or three comma-separated numbers (0-255 pixel units, in the model's channel order). Received: {text!r}")
    return tuple(vals)


def declared(input_range: str | None = None, mean=None, std=None, color_order: str | None = None) -> Preprocessing | None:
    """The preprocessing the flags declare, or None when no flag was given."""
    if input_range is None and mean is None and std is None and color_order is None:
        return None
    if input_range is not None and (mean is not None or std is not None):
        raise EdgeError(f"Expected either --input-range or --mean/--std, not both. Received: --input-range {input_range} with --mean/--std")
    input_range = RANGE_ALIASES.get(input_range, input_range)
    if input_range is not None and input_range not in RANGES:
        raise EdgeError(f"Expected --input-range one of {list(RANGES)}. Received: {input_range!r}")
    order = (color_order or "RGB").upper()
    if order not in COLOR_ORDERS:
        raise EdgeError(f"Expected --color-order one of {list(COLOR_ORDERS)}. Received: {color_order!r}")
    m, s = RANGES.get(input_range or "0-255")
    m3 = _triple(mean, "--mean") if mean is not None else (m,) * 3
    s3 = _triple(std, "--std") if std is not None else (s,) * 3
    if any(v == 0 for v in s3):
        raise EdgeError(f"Expected --std values that are not zero. Received: {list(s3)}")
    return Preprocessing(tuple(map(float, m3)), tuple(map(float, s3)), order, "declared")


def add_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """The same four flags on export, serve and predict."""
    g = p.add_argument_group("preprocessing the model expects", what)
    g.add_argument("--input-range", choices=[*RANGES, *RANGE_ALIASES], metavar="{0-255,0-1,-1-1}",
                   help="value range of the model's input tensor: 0-255 (raw pixels), 0-1, or -1-1 "
                        "(write --input-range=-1-1 or --input-range minus1-1: a bare -1-1 reads as a flag)")
    g.add_argument("--mean", help="per-channel mean in 0-255 pixel units, in the model's channel order "
                                  "(ImageNet RGB: 123.675,116.28,103.53; with --color-order BGR: 103.53,116.28,123.675)")
    g.add_argument("--std", help="per-channel std in 0-255 pixel units, in the model's channel order (ImageNet RGB: 58.395,57.12,57.375)")
    g.add_argument("--color-order", choices=list(COLOR_ORDERS), type=str.upper, help="channel order the model expects (default RGB)")


def from_args(args) -> Preprocessing | None:
    return declared(getattr(args, "input_range", None), getattr(args, "mean", None), getattr(args, "std", None),
                    getattr(args, "color_order", None))
