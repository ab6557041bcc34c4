"""The frozen-base head's recipe search: grouped folds, the table, the choice among near-ties."""

import numpy as np
import pytest

from trainer.head_recipe import Recipe, choose_recipe, fit_recipe, grouped_folds, view_rows

QUIET = {"log": lambda m: None}


def test_no_image_has_views_on_both_sides_of_a_fold():
    n, views = 60, 4
    labels = np.repeat(np.arange(3), n // 3)
    for train_idx, test_idx in grouped_folds(labels, 5, seed=0):
        rows = view_rows(train_idx, views, n)
        assert len(rows) == len(train_idx) * (views + 1)
        assert not set(rows % n) & set(test_idx)  # every training row's source image is out of the held-out part
        assert set(rows % n) == set(train_idx)


def test_views_of_held_out_images_cannot_leak_their_labels():
    """Labels are noise and every view is its image's exact copy: a search whose folds split an image from its
    views would score memorized copies far above chance. Grouped, it stays near chance."""
    rng = np.random.default_rng(0)
    n, dim, views = 120, 40, 4
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = rng.integers(0, 3, n)
    stacked = np.concatenate([x] * (views + 1))
    choice = choose_recipe(stacked, y, 3, views_options=(0, 2, 4), class_weight_options=("none", "balanced"), **QUIET)
    assert max(row["cv_accuracy"] for row in choice.table) < 0.55  # chance is 1/3; a leak would reach ~1.0


def test_the_table_lists_every_candidate_and_the_choice_is_the_simplest_within_one_standard_error():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 30)
    x = (rng.normal(size=(90, 10)) + 3 * y[:, None]).astype(np.float32)  # easy: every recipe is perfect
    stacked = np.concatenate([x, x + 0.01 * rng.normal(size=x.shape).astype(np.float32)])
    choice = choose_recipe(stacked, y, 3, views_options=(0, 1), class_weight_options=("none", "balanced"), **QUIET)
    assert len(choice.table) == 2 * 2 * 5
    best = choice.table[0]
    # the one-standard-error rule: as good as the best is within one standard error of its fold mean
    margin = max(0.002, best["cv_spread"] / np.sqrt(choice.folds))
    near_C = [row["C"] for row in choice.table if row["cv_accuracy"] >= best["cv_accuracy"] - margin and row["views"] == 0
              and row["class_weights"] == "none"]
    assert choice.recipe == Recipe(views=0, class_weights="none", C=min(near_C))
    d = choice.to_dict()
    assert d["chosen"] == {"views": 0, "class_weights": "none", "C": min(near_C), "scaling": "standardized"} and d["grouped_by"] == "source image"


def test_views_that_are_not_there_are_not_offered():
    y = np.repeat(np.arange(2), 20)
    x = np.random.default_rng(2).normal(size=(40, 5)).astype(np.float32) + y[:, None]
    choice = choose_recipe(x, y, 2, views_options=(0, 2, 4), **QUIET)
    assert {row["views"] for row in choice.table} == {0}


@pytest.mark.parametrize("n_classes", [2, 4])
def test_fit_recipe_returns_the_head_layer_and_weights_balance_classes(n_classes):
    rng = np.random.default_rng(3)
    counts = [60] + [10] * (n_classes - 1)
    y = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    x = (rng.normal(size=(len(y), 8)) + 1.2 * y[:, None]).astype(np.float32)
    W, b = fit_recipe(x, y, n_classes, Recipe(0, "balanced", 1.0))
    assert W.shape == (8, 1 if n_classes == 2 else n_classes) and b.shape == (W.shape[1],)
    logits = x @ W + b
    pred = (logits[:, 0] > 0).astype(int) if n_classes == 2 else logits.argmax(1)
    recall = [float((pred[y == c] == c).mean()) for c in range(n_classes)]
    assert min(recall) > 0.5, recall


def test_with_int8_features_every_candidate_is_scored_on_them_and_both_scalings_are_tried():
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), 40)
    x = (rng.normal(size=(120, 12)) + y[:, None]).astype(np.float32)
    # int8-like error: a shift common to every image plus noise that swamps the last six features
    noise = np.concatenate([0.01 * np.ones(6), 3.0 * np.ones(6)]).astype(np.float32)
    q = x + 0.5 + noise * rng.normal(size=x.shape).astype(np.float32)
    choice = choose_recipe(x, y, 3, int8=q, **QUIET)
    assert {row["scaling"] for row in choice.table} == {"standardized", "int8-error"}
    assert all("cv_int8_agreement" in row and "cv_int8_accuracy" in row for row in choice.table)
    assert choice.int8_agreement is not None and "int8 agreement" in choice.summary()
    # the chosen head, with the export's bias correction, keeps int8 answers close to float ones
    W, b = fit_recipe(x, y, 3, choice.recipe, int8=q)
    from trainer.head_recipe import bias_shift

    agree = ((x @ W + b).argmax(1) == ((q - bias_shift(x, q)) @ W + b).argmax(1)).mean()
    assert agree >= choice.int8_agreement - 0.1


def test_the_int8_error_scaler_folds_into_the_dense_layer_exactly():
    from sklearn.linear_model import LogisticRegression

    from trainer.head_recipe import ErrorScaler
    from trainer.heads import fold_scaler

    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(3), 30)
    x = rng.normal(size=(90, 6)) + y[:, None]
    scaler = ErrorScaler(x, x + rng.normal(scale=[0.01, 0.1, 1, 1, 1, 1], size=x.shape)).fit(x)
    linear = LogisticRegression().fit(scaler.transform(x), y)
    coef, intercept = fold_scaler(scaler, linear)
    np.testing.assert_allclose(x @ coef.T + intercept, linear.decision_function(scaler.transform(x)), rtol=1e-6, atol=1e-6)
