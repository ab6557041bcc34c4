"""The quadrant rule: dataset size x similarity to ImageNet -> fine-tuning strategy.

| quadrant | dataset | similar? | strategy |
|---|---|---|---|
| 1 | large | no  | 1: train everything from the pretrained start, small learning rate |
| 2 | large | yes | 2: freeze the lower blocks, train the top blocks + head |
| 3 | small | no  | 2, unfreezing deeper than quadrant 2, with augmentation |
| 4 | small | yes | 3: freeze the whole base, train only the head |

Pure Python: the decision is made, printed and tested without TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import TrainerError

STRATEGY_NAMES = {
    1: "train the entire network",
    2: "freeze the lower blocks, train the top blocks and the head",
    3: "freeze the whole convolutional base, train only the head",
}


@dataclass(frozen=True)
class QuadrantRule:
    quadrant: int
    strategy: int
    unfreeze_fraction: float  # of the backbone's blocks, for strategy 2
    augment: bool


# (large dataset?, similar to ImageNet?) -> what to do.
QUADRANTS: dict[tuple[bool, bool], QuadrantRule] = {
    (True, False): QuadrantRule(1, 1, 1.0, False),
    (True, True): QuadrantRule(2, 2, 0.25, False),
    (False, False): QuadrantRule(3, 2, 0.5, True),  # deeper than quadrant 2
    (False, True): QuadrantRule(4, 3, 0.0, True),  # augmented views are cached: cheap, and +1-2 points on Tux Paint
}

# From this ratio of the largest class to the smallest, "--class-weights auto" weights classes
# by n / (k * count): small real sets are rarely balanced (Tux Paint: 3.8x).
IMBALANCE_RATIO = 1.5
CLASS_WEIGHTS = ("auto", "balanced", "none")  # --class-weights

# Learning rates: large for a new head, small wherever pretrained layers train.
LR_HEAD = 1e-3
LR_FINE_TUNE = 1e-5
LR_FULL_PRETRAINED = 1e-4
LR_SCRATCH = 2e-3


@dataclass
class Decision:
    quadrant: int | None
    strategy: int
    strategy_name: str
    unfreeze_blocks: int  # blocks of the backbone that train (total for strategy 1, 0 for 3)
    total_blocks: int
    augment: bool
    learning_rates: dict[str, float]
    dataset_size: int
    small_threshold: int
    size_class: str
    similarity: str | None  # "high" / "low" / None when not applicable
    similarity_score: float | None
    pretrained: bool
    similarity_threshold: float | None = None
    class_weights: str = "none"  # "balanced" or "none"
    imbalance_ratio: float = 1.0
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        q = f"quadrant {self.quadrant}" if self.quadrant else "no quadrant (no pretrained weights)"
        lines = [f"strategy {self.strategy} ({self.strategy_name}); {q}"]
        lines += [f"  - {r}" for r in self.reasons]
        return "\n".join(lines)


def choose_strategy(
    *,
    dataset_size: int,
    pretrained: bool,
    similarity: str | None,
    total_blocks: int,
    similarity_score: float | None = None,
    small_threshold: int = 1000,
    strategy: int | None = None,
    unfreeze_blocks: int | None = None,
    augment: bool | None = None,
    similarity_threshold: float | None = None,
    imbalance_ratio: float = 1.0,
    class_weights: str = "auto",
) -> Decision:
    """Pick a strategy from the data's size and similarity; explicit arguments override.

    `similarity` is "high", "low" or None (unknown: only allowed without
    pretrained weights, where there is nothing to transfer).
    """
    if strategy is not None and strategy not in STRATEGY_NAMES:
        raise TrainerError(f"--strategy must be one of {sorted(STRATEGY_NAMES)}. Received: strategy={strategy}")
    if unfreeze_blocks is not None and not 0 <= unfreeze_blocks <= total_blocks:
        raise TrainerError(
            f"--unfreeze-blocks must be between 0 and {total_blocks} (the backbone's block count). "
            f"Received: unfreeze_blocks={unfreeze_blocks}"
        )
    if similarity not in (None, "high", "low"):
        raise TrainerError(f"similarity must be 'high' or 'low'. Received: similarity={similarity!r}")
    large = dataset_size > small_threshold
    size_class = "large" if large else "small"
    reasons = [f"{dataset_size} training images: {size_class} (threshold {small_threshold})"]

    if not pretrained:
        quadrant, rule = None, QuadrantRule(0, 1, 1.0, not large)
        reasons.append("no pretrained weights: there is nothing to transfer, so the whole network trains")
    else:
        if similarity is None:
            raise TrainerError("similarity must be known when pretrained weights are loaded. Received: similarity=None")
        rule = QUADRANTS[(large, similarity == "high")]
        quadrant = rule.quadrant
        score = f" (score {similarity_score:.3f}" if similarity_score is not None else ""
        if score:
            score += f", threshold {similarity_threshold})" if similarity_threshold is not None else ")"
        reasons.append(f"similarity to ImageNet: {similarity}{score}")
        reasons.append(f"quadrant {quadrant} -> strategy {rule.strategy}")

    chosen = rule.strategy
    if strategy is not None and strategy != chosen:
        reasons.append(f"strategy {strategy} forced by --strategy (the rule chose {chosen})")
        chosen = strategy
    if chosen == 1:
        blocks = total_blocks
    elif chosen == 3:
        blocks = 0
    else:
        fraction = rule.unfreeze_fraction if rule.strategy == 2 else QUADRANTS[(True, True)].unfreeze_fraction
        blocks = max(1, round(total_blocks * fraction))
    if unfreeze_blocks is not None:
        if chosen != 2:
            raise TrainerError(
                f"--unfreeze-blocks applies to strategy 2 only. Received: unfreeze_blocks={unfreeze_blocks} with strategy {chosen}"
            )
        reasons.append(f"{unfreeze_blocks} top blocks unfrozen by --unfreeze-blocks (the rule chose {blocks})")
        blocks = unfreeze_blocks
    elif chosen == 2:
        reasons.append(f"unfreezing the top {blocks} of {total_blocks} blocks")

    aug = rule.augment if augment is None else augment
    if aug:
        reasons.append("data augmentation on" + (" (small dataset)" if augment is None else " (--augment)"))

    if class_weights not in CLASS_WEIGHTS:
        raise TrainerError(f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}. Received: class_weights={class_weights!r}")
    weighting = class_weights
    if class_weights == "auto":
        weighting = "balanced" if imbalance_ratio >= IMBALANCE_RATIO else "none"
        if weighting == "balanced":
            reasons.append(f"classes imbalanced {imbalance_ratio:.1f}x (>= {IMBALANCE_RATIO}x): balanced class weights, "
                           "so every class counts the same in the loss")
    elif class_weights == "balanced":
        reasons.append("balanced class weights (--class-weights)")

    if chosen == 1:
        lrs = {"full": LR_FULL_PRETRAINED if pretrained else LR_SCRATCH}
    elif chosen == 2:
        lrs = {"head": LR_HEAD, "fine_tune": LR_FINE_TUNE}
    else:
        lrs = {"head": LR_HEAD}
    return Decision(
        quadrant=quadrant,
        strategy=chosen,
        strategy_name=STRATEGY_NAMES[chosen],
        unfreeze_blocks=blocks,
        total_blocks=total_blocks,
        augment=aug,
        learning_rates=lrs,
        dataset_size=dataset_size,
        small_threshold=small_threshold,
        size_class=size_class,
        similarity=similarity if pretrained else None,
        similarity_score=similarity_score,
        pretrained=pretrained,
        similarity_threshold=similarity_threshold,
        class_weights=weighting,
        imbalance_ratio=round(imbalance_ratio, 3),
        reasons=reasons,
    )
