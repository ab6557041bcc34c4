"""The training options: one dataclass that the CLI fills and `trainer.train` reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import TrainerError
from .strategy import CLASS_WEIGHTS


@dataclass
class TrainConfig:
    data_dir: Path
    val_dir: Path | None = None
    backbone: str = "mobilenet_v2"
    alpha: float | None = None
    image_size: int | None = None  # None: the backbone's default
    weights: str | None = "imagenet"  # "imagenet", None (from scratch) or a file path
    head: str = "gap"
    similarity: str = "auto"  # high | low | auto
    small_threshold: int = 1000
    strategy: int | None = None  # override the quadrant rule
    unfreeze_blocks: int | None = None
    augment: bool | None = None  # None: the quadrant rule decides
    augment_views: int = 4  # cached augmented views per image for strategy 3
    class_weights: str = "auto"  # auto (balanced when imbalanced) | balanced | none
    cut_block: int | None = None  # strategy 3 on an earlier block's features
    epochs: int = 10
    fine_tune_epochs: int | None = None  # strategy 2, phase 2; None: same as epochs
    batch_size: int = 32
    val_fraction: float = 0.2
    patience: int = 5
    dropout: float = 0.2
    out_dir: Path = Path("runs")
    name: str | None = None
    seed: int = 0
    distribute: str | None = None  # None | "mirrored" | "multi_worker"
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
