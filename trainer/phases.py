"""What each strategy runs: a table of phases, in order, that one runner executes.

A phase says on what data it trains (the head alone on the frozen base's cached features, or the
whole model on images), how many top blocks of the base it unfreezes, which learning rate of the
decision and which epoch count of the config it uses, and whether a fine-tune that never beats the
validation loss it started from is undone. Pure Python: read and tested without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

IF_PRETRAINED = "if pretrained"  # a flag that holds exactly when the base starts from pretrained weights
ALL_BLOCKS = "all"  # every block of the base
DECIDED_BLOCKS = "decided"  # the decision's unfreeze_blocks


@dataclass(frozen=True)
class HeadPhase:
    """The head alone, on the frozen base's features (cached, unless cfg.extra["cache_features"] is False).

    `final`: the head is the last thing trained (a frozen-base run), so augmented views are cached
    and an SVM head is left to the finish; otherwise it is the starting point of a fine-tune."""

    final: bool = False
    learning_rate: str = "head"
    epochs: str = "epochs"
    when: bool | str = True


@dataclass(frozen=True)
class ImagePhase:
    """The whole model on images, with the top `unfreeze` blocks of the base trainable."""

    name: str  # "{blocks}" is filled with the number of unfrozen blocks
    unfreeze: str
    learning_rate: str
    epochs: str = "epochs"
    guard: bool | str = False  # undo the phase when it never beats its starting validation loss
    keep_bn_frozen: bool | str = False
    when: bool | str = True


Phase = HeadPhase | ImagePhase

STRATEGY_PHASES: dict[int, tuple[Phase, ...]] = {
    # A pretrained base gets a fitted head first: a random head's gradients would wreck its features.
    1: (HeadPhase(when=IF_PRETRAINED),
        ImagePhase("full", unfreeze=ALL_BLOCKS, learning_rate="full", guard=IF_PRETRAINED, keep_bn_frozen=IF_PRETRAINED)),
    2: (HeadPhase(),
        ImagePhase("fine-tune top {blocks} blocks", unfreeze=DECIDED_BLOCKS, learning_rate="fine_tune",
                   epochs="fine_tune_epochs", guard=True)),
    3: (HeadPhase(final=True),),
}


def holds(flag: bool | str, decision) -> bool:
    return decision.pretrained if flag == IF_PRETRAINED else bool(flag)


def phases_for(decision) -> list[Phase]:
    """The decision's strategy's phases that apply to this run, in order."""
    return [p for p in STRATEGY_PHASES[decision.strategy] if holds(p.when, decision)]


def blocks_for(phase: ImagePhase, decision) -> int:
    return decision.total_blocks if phase.unfreeze == ALL_BLOCKS else decision.unfreeze_blocks


def epochs_for(phase: Phase, cfg) -> int:
    """`fine_tune_epochs` falls back to `epochs` when not given."""
    return (cfg.fine_tune_epochs or cfg.epochs) if phase.epochs == "fine_tune_epochs" else cfg.epochs
