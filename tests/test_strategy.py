"""The quadrant rule, all four quadrants, the no-weights case and overrides. Pure Python."""

import pytest

from trainer.errors import TrainerError
from trainer.strategy import LR_FINE_TUNE, LR_HEAD, choose_strategy

BLOCKS = 17


def decide(**kw):
    args = dict(dataset_size=500, pretrained=True, similarity="high", total_blocks=BLOCKS)
    args.update(kw)
    return choose_strategy(**args)


@pytest.mark.parametrize(
    "size, similarity, quadrant, strategy, augment",
    [(5000, "low", 1, 1, False), (5000, "high", 2, 2, False), (500, "low", 3, 2, True), (500, "high", 4, 3, True)],
)
def test_quadrants(size, similarity, quadrant, strategy, augment):
    d = decide(dataset_size=size, similarity=similarity)
    assert (d.quadrant, d.strategy, d.augment) == (quadrant, strategy, augment)
    assert d.reasons and f"quadrant {quadrant}" in " ".join(d.reasons)


def test_quadrant_3_unfreezes_deeper_than_quadrant_2():
    q2 = decide(dataset_size=5000, similarity="high")
    q3 = decide(dataset_size=500, similarity="low")
    assert 0 < q2.unfreeze_blocks < q3.unfreeze_blocks < BLOCKS


def test_strategy_blocks_and_learning_rates():
    assert decide(dataset_size=5000, similarity="low").unfreeze_blocks == BLOCKS
    assert decide(dataset_size=500, similarity="high").unfreeze_blocks == 0
    d = decide(dataset_size=5000, similarity="high")
    assert d.learning_rates == {"head": LR_HEAD, "fine_tune": LR_FINE_TUNE}
    assert decide(dataset_size=5000, similarity="low").learning_rates["full"] < LR_HEAD


def test_threshold_is_a_parameter():
    assert decide(dataset_size=500, small_threshold=100, similarity="high").quadrant == 2
    assert decide(dataset_size=1000, similarity="high").quadrant == 4  # "1,000 or fewer" is small


def test_no_pretrained_weights_trains_everything_and_says_why():
    d = choose_strategy(dataset_size=300, pretrained=False, similarity=None, total_blocks=BLOCKS)
    assert d.quadrant is None and d.strategy == 1 and d.unfreeze_blocks == BLOCKS
    assert any("nothing to transfer" in r for r in d.reasons)


def test_overrides_win_and_are_recorded():
    d = decide(dataset_size=500, similarity="high", strategy=2, unfreeze_blocks=3)
    assert (d.strategy, d.unfreeze_blocks) == (2, 3)
    assert any("--strategy" in r for r in d.reasons) and any("--unfreeze-blocks" in r for r in d.reasons)
    assert decide(augment=True).augment is True


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(strategy=4), "strategy=4"),
        (dict(unfreeze_blocks=99, strategy=2), "unfreeze_blocks=99"),
        (dict(unfreeze_blocks=2), "strategy 2 only"),
        (dict(similarity="medium"), "similarity='medium'"),
    ],
)
def test_bad_overrides_are_one_line_errors(kw, match):
    with pytest.raises(TrainerError, match=match):
        decide(**kw)


@pytest.mark.parametrize("ratio, setting, expected", [(1.0, "auto", "none"), (1.4, "auto", "none"), (3.8, "auto", "balanced"),
                                                      (3.8, "none", "none"), (1.0, "balanced", "balanced")])
def test_class_weights_follow_the_imbalance_and_the_decision_says_so(ratio, setting, expected):
    d = decide(imbalance_ratio=ratio, class_weights=setting)
    assert d.class_weights == expected
    assert any("class weights" in r for r in d.reasons) == (expected == "balanced")


def test_similarity_threshold_is_in_the_reasons():
    d = decide(similarity_score=0.912, similarity_threshold=0.7)
    assert any("score 0.912, threshold 0.7" in r for r in d.reasons)
