"""The training options: one dataclass whose fields declare the `edgeport train` flags too
(edge_core.options builds the parser from them), read by `trainer.train`."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge_core.options import option

from .errors import TrainerError
from .strategy import CLASS_WEIGHTS


@dataclass
class TrainConfig:
    data_dir: Path = option(help="a folder with one subfolder of images per class", positional=True, type=Path)
    val_dir: Path | None = option(None, "a separate validation folder (default: a seeded stratified split)", type=Path)
    backbone: str = option("mobilenet_v2", "mobilenet_v2 | mobilenet_v3_small | mobilenet_v3_large | resnet50")
    alpha: float | None = option(None, "width multiplier (MobileNets)", type=float)
    image_size: int | None = option(None, "square input size in pixels (default: the backbone's)", type=int)
    # "imagenet", None (from scratch) or a file path
    weights: str | None = option("imagenet", "imagenet (from Keras' cache, or downloaded) | auto (imagenet when cached, else none) "
                                             "| none | PATH to a weights or .keras file")
    head: str = option("gap", choices=["fc", "gap", "svm"])
    similarity: str = option("auto", choices=["high", "low", "auto"])
    small_threshold: int = option(1000, "datasets up to this many images count as small", type=int)
    strategy: int | None = option(None, "override the quadrant rule", type=int, choices=[1, 2, 3])
    unfreeze_blocks: int | None = option(None, "strategy 2: how many top blocks train", type=int)
    augment: bool | None = option(None, "force data augmentation on or off (default: the quadrant rule decides)",
                                  action=argparse.BooleanOptionalAction)
    augment_views: int = 4  # cached augmented views per image for strategy 3
    int8_aware: bool = option(True, "frozen-base runs: quantize the base as an int8 export will, score every head recipe on "
                                    "its features too, and report the int8 agreement to expect",
                              action=argparse.BooleanOptionalAction)
    class_weights: str = option("auto", "auto: balanced class weights when the largest class has >= 1.5x the images of the smallest",
                                choices=CLASS_WEIGHTS)
    cut_block: int | None = option(None, "cut the backbone after this block and train a head on its features", type=int)
    epochs: int = option(10, type=int)
    fine_tune_epochs: int | None = option(None, "strategy 2, second phase (default: --epochs)", type=int)
    batch_size: int = option(32, type=int)
    val_fraction: float = 0.2
    patience: int = option(5, "early stopping patience on validation loss", type=int)
    dropout: float = 0.2
    out_dir: Path = option(Path("runs"), "runs folder (default: runs/)", flag="--out", type=Path)
    name: str | None = option(None, "run name (default: BACKBONE-DATE-TIME)")
    seed: int = option(0, type=int)
    distribute: str | None = option(None, "tf.distribute strategy; multi_worker reads TF_CONFIG", choices=["mirrored", "multi_worker"])
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.out_dir = Path(self.out_dir)
        if self.val_dir is not None:
            self.val_dir = Path(self.val_dir)
        if isinstance(self.weights, str) and self.weights.lower() == "none":
            self.weights = None
        if self.similarity not in ("high", "low", "auto"):
            raise TrainerError(f"--similarity must be high, low or auto. Received: similarity={self.similarity!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise TrainerError(f"--{name.replace('_', '-')} must be at least 1. Received: {name}={getattr(self, name)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise TrainerError(f"val_fraction must be between 0 and 1. Received: val_fraction={self.val_fraction}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise TrainerError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTS)}. Received: class_weights={self.class_weights!r}")
        if self.distribute not in (None, "mirrored", "multi_worker"):
            raise TrainerError(f"--distribute must be mirrored or multi_worker. Received: distribute={self.distribute!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
