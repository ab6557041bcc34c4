"""Backbones as data: one registry entry per architecture.

Each entry knows how to build the Keras application without its top, which
normalization it expects (built into the model as layers, so every model takes
raw 0-255 RGB), its default and minimum input size, and how its layers group
into blocks, so "unfreeze the top k blocks" always means whole blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TrainerError

# ResNet's "caffe" normalization: RGB -> BGR, then subtract the ImageNet mean per channel.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    keras_name: str  # attribute of keras.applications
    default_size: int
    min_size: int
    normalization: str  # "tf" (x/127.5-1), "caffe" (BGR, mean), "builtin" (the application has it)
    block_pattern: str  # regex whose first group names a layer's block
    alphas: tuple[float, ...] = ()  # allowed width multipliers; empty = none
    extra_kwargs: dict = field(default_factory=dict)

    def check_size(self, size: int) -> None:
        if size < self.min_size:
            raise TrainerError(
                f"{self.name} needs an input of at least {self.min_size}x{self.min_size} pixels. "
                f"Received: image_size={size}"
            )

    def check_alpha(self, alpha: float | None) -> None:
        if alpha is None:
            return
        if not self.alphas:
            raise TrainerError(f"{self.name} has no width multiplier. Received: alpha={alpha}")
        if alpha not in self.alphas:
            raise TrainerError(f"{self.name} supports alpha in {list(self.alphas)}. Received: alpha={alpha}")


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "mobilenet_v2", "MobileNetV2", 224, 32, "tf", r"^(expanded_conv|block_\d+)_",
            alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        ),
        BackboneSpec(
            "mobilenet_v3_small", "MobileNetV3Small", 224, 32, "builtin", r"^(expanded_conv(?:_\d+)?)_",
            alphas=(0.75, 1.0), extra_kwargs={"include_preprocessing": True},
        ),
        BackboneSpec(
            "mobilenet_v3_large", "MobileNetV3Large", 224, 32, "builtin", r"^(expanded_conv(?:_\d+)?)_",
            alphas=(0.75, 1.0), extra_kwargs={"include_preprocessing": True},
        ),
        BackboneSpec("resnet50", "ResNet50", 224, 32, "caffe", r"^(conv\d_block\d+)_"),
    )
}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise TrainerError(f"Unknown backbone; expected one of {sorted(BACKBONES)}. Received: backbone={name!r}") from None


def normalization_layers(spec: BackboneSpec, size: int):
    """Layers that turn raw 0-255 RGB into what the backbone expects.

    Built only from stock Keras layers, so the saved model loads anywhere with
    safe_mode on and converts to TFLite/ONNX without custom ops.
    """
    import keras
    import numpy as np

    if spec.normalization == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")]
    if spec.normalization == "caffe":
        # A fixed 1x1 convolution swaps R and B and subtracts the BGR mean.
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for out_c, in_c in enumerate((2, 1, 0)):
            kernel[0, 0, in_c, out_c] = 1.0
        conv = keras.layers.Conv2D(3, 1, name="normalize_caffe_bgr", trainable=False)
        conv.build((None, size, size, 3))
        conv.set_weights([kernel, -np.array(CAFFE_BGR_MEAN, np.float32)])
        return [conv]
    return []


def build_base(spec: BackboneSpec, size: int, alpha: float | None, weights: str | None):
    """The convolutional base without its top. `weights`: "imagenet", None, or a file path."""
    return build_base_with_info(spec, size, alpha, weights)[0]


def build_base_with_info(spec: BackboneSpec, size: int, alpha: float | None, weights: str | None):
    """(base, LoadedWeights): the base, and which checkpoint it got (the report says so)."""
    import keras

    from .pretrained import LoadedWeights, load_imagenet

    spec.check_size(size)
    spec.check_alpha(alpha)
    kwargs = dict(input_shape=(size, size, 3), include_top=False, **spec.extra_kwargs)
    if alpha is not None:
        kwargs["alpha"] = alpha
    ctor = getattr(keras.applications, spec.keras_name)
    if weights == "imagenet":
        return load_imagenet(spec, ctor, size, kwargs)
    base = ctor(weights=None, **kwargs)
    if not weights:
        return base, LoadedWeights("none", None, None)
    path = Path(weights)
    if not path.is_file():
        raise TrainerError(f"--weights must be 'imagenet', 'auto', 'none' or an existing file. Received: weights={weights!r}")
    try:
        load_weights_into(base, path)
    except Exception as e:
        raise TrainerError(f"Could not load backbone weights from {path}: {e}. Received: weights={weights!r}") from None
    return base, LoadedWeights(str(path), path.name, None)


def rebuild_at(spec: BackboneSpec, base, size: int, alpha: float | None):
    """The same base (same weights) at another input size: convolution weights do not depend on it."""
    copy = build_base(spec, size, alpha, None)
    copy.set_weights(base.get_weights())
    return copy


def load_weights_into(base, path: Path) -> None:
    """Load a weights file, or the backbone out of a whole saved .keras classifier."""
    import keras

    if path.suffix == ".keras":
        model = keras.models.load_model(path, compile=False, safe_mode=True)
        donor = model.get_layer("backbone")
        base.set_weights(donor.get_weights())
    else:
        base.load_weights(str(path))


def block_index(spec: BackboneSpec, layers) -> list[int]:
    """The block number of every layer, in graph order.

    Layers are topologically ordered, so a layer whose name does not carry a
    block (MobileNetV3's auto-named activations, the final 1x1 conv) belongs
    to the block of the named layer before it. Block 0 is the stem.
    """
    pattern = re.compile(spec.block_pattern)
    names: list[str] = []
    out = []
    for layer in layers:
        m = pattern.match(layer.name)
        if m and m.group(1) not in names:
            names.append(m.group(1))
        out.append(len(names))  # 0 until the first block begins
    return out


def count_blocks(spec: BackboneSpec, layers) -> int:
    return max(block_index(spec, layers))


def truncate(spec: BackboneSpec, base, block: int):
    """The base cut after block `block` (its last layer in graph order): the design's
    alternative for small, unlike data, whose late features are the most ImageNet-specific."""
    import keras

    total = count_blocks(spec, base.layers)
    if not 1 <= block <= total:
        raise TrainerError(f"--cut-block must be between 1 and {total} (the backbone's block count). Received: cut_block={block}")
    blocks = block_index(spec, base.layers)
    last = max(i for i, b in enumerate(blocks) if b == block)
    return keras.Model(base.inputs, base.layers[last].output, name=base.name)
