"""The frozen-base head's recipe, chosen by cross-validation on the user's own cached features.

A default tuned on one dataset is a guess about every other: four augmented views helped the
set they were tuned on and cost 6 points on a set never seen. So every candidate recipe
(augmented views, regularization C, class weights) is scored on the user's data and the
best one is fitted; the whole table goes into the run's report.

Folds are grouped by source image: an image and all of its augmented views sit on one side
of a fold, and each fold is scored on original images only (what the model will be asked).
Without grouping, a view of a held-out image in the training rows leaks its answer.

Features arrive stacked: rows [0, n) are the original images, rows [v*n, (v+1)*n) the v-th
augmented view of the same images in the same order.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .heads import converging_quietly, floored_scaler, fold_scaler

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)  # on (floored) standardized features
MAX_ITER = 500
CV_MAX_ITER, CV_TOL = 200, 1e-3  # ranking C needs less precision than the final fit
MAX_FOLDS = 5
# A candidate must beat a simpler one by more than this share of accuracy to be chosen: on a few hundred
# held-out images one image is 0.2-1 point, so smaller differences are noise, and simpler recipes cost less.
TIE = 0.002


@dataclass(frozen=True, order=True)
class Recipe:
    views: int  # augmented views per image besides the original
    class_weights: str  # "none" | "balanced"
    C: float

    def describe(self) -> str:
        views = "no augmented views" if not self.views else f"{self.views} augmented view{'s' * (self.views > 1)}"
        return f"{views}, C={self.C:g}, {'balanced' if self.class_weights == 'balanced' else 'no'} class weights"


@dataclass
class RecipeChoice:
    recipe: Recipe
    cv_accuracy: float
    folds: int
    seconds: float
    table: list[dict] = field(default_factory=list)  # every candidate, best first

    def to_dict(self) -> dict:
        return {"chosen": asdict(self.recipe), "cv_accuracy": round(self.cv_accuracy, 4), "folds": self.folds,
                "grouped_by": "source image", "seconds": round(self.seconds, 2), "candidates": self.table}

    def summary(self) -> str:
        return (f"head recipe: {self.recipe.describe()} (grouped {self.folds}-fold cross-validation accuracy "
                f"{self.cv_accuracy:.3f}, best of {len(self.table)} candidates, {self.seconds:.0f} s)")


def fold_count(labels: np.ndarray) -> int:
    """As many folds (2-5) as the smallest class allows."""
    return max(2, min(MAX_FOLDS, int(np.bincount(labels).min())))


def grouped_folds(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds over the original images: (train, held-out) indices into [0, n)."""
    from sklearn.model_selection import StratifiedKFold

    n = len(labels)
    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros((n, 1)), labels))


def view_rows(images: np.ndarray, views: int, n: int) -> np.ndarray:
    """Rows of the stacked feature array holding `images` and their first `views` augmented views."""
    return np.concatenate([images + v * n for v in range(views + 1)])


def _weights(labels: np.ndarray, kind: str, n_classes: int) -> np.ndarray | None:
    if kind != "balanced":
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    per_class = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return per_class[labels]


def _scores_over_C(x_tr, y_tr, x_te, y_te, weights, grid) -> list[float]:
    """Held-out accuracy for every C of `grid`, ascending, each fit warm-started from the last."""
    from sklearn.linear_model import LogisticRegression

    scaler = floored_scaler().fit(x_tr)
    x_tr, x_te = scaler.transform(x_tr), scaler.transform(x_te)
    model = LogisticRegression(max_iter=CV_MAX_ITER, tol=CV_TOL, warm_start=True)
    out = []
    with converging_quietly():
        for C in grid:
            model.set_params(C=C).fit(x_tr, y_tr, sample_weight=weights)
            out.append(float((model.predict(x_te) == y_te).mean()))
    return out


@contextlib.contextmanager
def one_blas_thread():
    """Logistic regression on a few thousand rows is many small matrix products: with BLAS's own thread
    pool each is slower than on one thread, and under load it was 100x slower (OpenBLAS threads spinning
    against each other: 10 s against 0.1 s for one fit here, measured)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def choose_recipe(features: np.ndarray, labels: np.ndarray, n_classes: int, *, views_options=(0,),
                  class_weight_options=("none",), grid=C_GRID, seed: int = 0, log=print) -> RecipeChoice:
    """Score every recipe by grouped cross-validation; return the best (simplest among near-ties)."""
    t = time.perf_counter()
    n = len(labels)
    available = len(features) // n - 1
    views_options = sorted({v for v in views_options if v <= available})
    grid = sorted(grid)
    folds = fold_count(labels)
    scores: dict[Recipe, list[float]] = {}
    with one_blas_thread():
        for train_idx, test_idx in grouped_folds(labels, folds, seed):
            for views in views_options:
                rows = view_rows(train_idx, views, n)
                y_rows = labels[rows % n]
                for cw in class_weight_options:
                    accs = _scores_over_C(features[rows], y_rows, features[test_idx], labels[test_idx],
                                          _weights(y_rows, cw, n_classes), grid)
                    for C, acc in zip(grid, accs):
                        scores.setdefault(Recipe(views, cw, C), []).append(acc)
    table = sorted(({"views": r.views, "class_weights": r.class_weights, "C": r.C,
                     "cv_accuracy": round(float(np.mean(a)), 4), "cv_spread": round(float(np.std(a)), 4)}
                    for r, a in scores.items()), key=lambda row: (-row["cv_accuracy"], row["views"], row["class_weights"], row["C"]))
    best_score = float(max(np.mean(a) for a in scores.values()))
    # Among recipes within TIE of the best: fewest views, then unweighted, then the strongest regularization.
    near = [r for r in scores if np.mean(scores[r]) >= best_score - TIE]
    chosen = min(near, key=lambda r: (r.views, r.class_weights != "none", r.C))
    choice = RecipeChoice(chosen, float(np.mean(scores[chosen])), folds, time.perf_counter() - t, table)
    log(choice.summary())
    return choice


def fit_recipe(features: np.ndarray, labels: np.ndarray, n_classes: int, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """The chosen recipe fitted on every training image (and its views): (W, b) for the head's Dense layer,
    the floored scaler folded in."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    n = len(labels)
    rows = view_rows(np.arange(n), recipe.views, n)
    y = labels[rows % n]
    pipe = make_pipeline(floored_scaler(), LogisticRegression(C=recipe.C, max_iter=MAX_ITER))
    with converging_quietly(), one_blas_thread():
        pipe.fit(features[rows], y, logisticregression__sample_weight=_weights(y, recipe.class_weights, n_classes))
    coef, intercept = fold_scaler(pipe.steps[0][1], pipe.steps[-1][1])
    if n_classes > 2 and coef.shape[0] != n_classes:  # a class absent from training: no row for it
        raise ValueError(f"expected {n_classes} classes in the training labels, found {coef.shape[0]}")
    return coef.T.astype(np.float32), intercept.astype(np.float32)
