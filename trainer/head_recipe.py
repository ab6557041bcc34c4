"""The frozen-base head's recipe, chosen by cross-validation on the user's own cached features.

A default tuned on one dataset is a guess about every other: four augmented views helped the
set they were tuned on and cost 6 points on a set never seen. So every candidate recipe
(augmented views, regularization C, class weights, feature scaling) is scored on the user's data
and the best one is fitted; the whole table goes into the run's report.

Folds are grouped by source image: an image and all of its augmented views sit on one side
of a fold, and each fold is scored on original images only (what the model will be asked).
Without grouping, a view of a held-out image in the training rows leaks its answer.

With the int8 base's features of the original images (trainer.int8_probe), every candidate is
also scored on them: held-out int8 accuracy and top-1 agreement with the float answer, the
figures an int8 export will be verified on (less the mean shift the export's bias correction removes in any case). A second scaling is offered then: each feature
divided by its int8 error instead of its spread, so the L2 penalty weighs exactly what
quantization adds to the logits (standardizing amplifies the low-spread features that int8
rounding swamps). The choice: among the recipes within one standard error of the most accurate
one, the most int8-robust, and among near-ties the simplest.

Features arrive stacked: rows [0, n) are the original images, rows [v*n, (v+1)*n) the v-th
augmented view of the same images in the same order.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .heads import converging_quietly, floored_scaler, fold_scaler

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)  # on scaled features
MAX_ITER = 500
CV_MAX_ITER, CV_TOL = 200, 1e-3  # ranking C needs less precision than the final fit
MAX_FOLDS = 5
# A candidate must beat a simpler one by more than this share of accuracy to be chosen: on a few hundred
# held-out images one image is 0.2-1 point, so smaller differences are noise, and simpler recipes cost less.
TIE = 0.002
SCALINGS = ("standardized", "int8-error")
ERROR_FLOOR = 0.5  # an int8 error scale is at least this share of the median one


@dataclass(frozen=True, order=True)
class Recipe:
    views: int  # augmented views per image besides the original
    class_weights: str  # "none" | "balanced"
    C: float
    scaling: str = "standardized"  # | "int8-error"

    def describe(self) -> str:
        views = "no augmented views" if not self.views else f"{self.views} augmented view{'s' * (self.views > 1)}"
        weights = "balanced" if self.class_weights == "balanced" else "no"
        scaled = "standardized features" if self.scaling == "standardized" else "features scaled by their int8 error"
        return f"{views}, C={self.C:g}, {weights} class weights, {scaled}"

    def simplicity(self) -> tuple:
        """Sort key among near-ties: fewest views, unweighted, standardized, strongest regularization."""
        return (self.views, self.class_weights != "none", self.scaling != "standardized", self.C)


@dataclass
class RecipeChoice:
    recipe: Recipe
    cv_accuracy: float
    folds: int
    seconds: float
    table: list[dict] = field(default_factory=list)  # every candidate, best first
    int8_agreement: float | None = None  # cross-validated, when int8 features were measured
    int8_accuracy: float | None = None

    def to_dict(self) -> dict:
        d = {"chosen": asdict(self.recipe), "cv_accuracy": round(self.cv_accuracy, 4), "folds": self.folds,
             "grouped_by": "source image", "seconds": round(self.seconds, 2), "candidates": self.table}
        if self.int8_agreement is not None:
            d["cv_int8_agreement"] = round(self.int8_agreement, 4)
            d["cv_int8_accuracy"] = round(self.int8_accuracy, 4)
            d["rule"] = ("among recipes within one standard error of the best accuracy, the highest int8 agreement; "
                         "near-ties go to the simplest")
        else:
            d["rule"] = "the simplest recipe within one standard error of the best accuracy"
        return d

    def summary(self) -> str:
        int8 = (f"; int8 agreement {self.int8_agreement:.3f}, int8 accuracy {self.int8_accuracy:.3f}"
                if self.int8_agreement is not None else "")
        return (f"head recipe: {self.recipe.describe()} (grouped {self.folds}-fold cross-validation: accuracy "
                f"{self.cv_accuracy:.3f}{int8}; chosen from {len(self.table)} candidates in {self.seconds:.0f} s)")


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


class ErrorScaler:
    """Centres each feature and divides it by its int8 error (RMS over images), floored: fold_scaler folds it
    into the Dense layer exactly as it folds a StandardScaler."""

    def __init__(self, float_features: np.ndarray, int8: np.ndarray):
        err = (int8 - float_features).std(0)  # the shift common to every image is removed by the export's bias correction
        # Floored at half the median error: a near-dead feature has almost no int8 error, and an unfloored
        # weight of 1/error on it turned float16's tiny rounding into flipped answers (Tux Paint at 96 px:
        # float16 agreement 95.6%, under its 98% floor).
        self.scale_ = np.maximum(err, ERROR_FLOOR * float(np.median(err)) or 1.0)

    def fit(self, x, y=None, sample_weight=None):
        self.mean_ = x.mean(0)
        return self

    def transform(self, x):
        return (x - self.mean_) / self.scale_


def bias_shift(float_features: np.ndarray, int8: np.ndarray) -> np.ndarray:
    """The uncorrected int8 features' mean shift: the part of the probe's error (trainer.int8_probe) that the
    export's bias correction (exporter/layer_bias.py) removes in any case, so no recipe is scored on it."""
    return (int8 - float_features).mean(0)


def _scaler(scaling: str, float_originals: np.ndarray, int8_originals: np.ndarray | None):
    return floored_scaler() if scaling == "standardized" else ErrorScaler(float_originals, int8_originals)


@contextlib.contextmanager
def one_blas_thread():
    """Logistic regression on a few thousand rows is many small matrix products: with BLAS's own thread
    pool each is slower than on one thread, and under load 100x slower (OpenBLAS threads spinning
    against each other: 10 s against 0.1 s for one fit here, measured)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _scores_over_C(scaler, x_tr, y_tr, held_out: list[np.ndarray], y_te, weights, grid) -> list[tuple]:
    """For every C of `grid`, ascending, each fit warm-started from the last: (float accuracy, int8 accuracy,
    int8 agreement) on the held-out images (the int8 figures None without int8 features)."""
    from sklearn.linear_model import LogisticRegression

    scaler.fit(x_tr)
    x_tr = scaler.transform(x_tr)
    held_out = [scaler.transform(h) for h in held_out]
    model = LogisticRegression(max_iter=CV_MAX_ITER, tol=CV_TOL, warm_start=True)
    out = []
    with converging_quietly():
        for C in grid:
            model.set_params(C=C).fit(x_tr, y_tr, sample_weight=weights)
            preds = [model.predict(h) for h in held_out]
            acc = float((preds[0] == y_te).mean())
            if len(preds) == 1:
                out.append((acc, None, None))
            else:
                out.append((acc, float((preds[1] == y_te).mean()), float((preds[1] == preds[0]).mean())))
    return out


def choose_recipe(features: np.ndarray, labels: np.ndarray, n_classes: int, *, views_options=(0,),
                  class_weight_options=("none",), grid=C_GRID, int8: np.ndarray | None = None, seed: int = 0,
                  log=print) -> RecipeChoice:
    """Score every recipe by grouped cross-validation and choose one (see the module's docstring).

    `int8`: the int8 base's features of the original images (rows [0, n) of `features`), or None."""
    t = time.perf_counter()
    n = len(labels)
    available = len(features) // n - 1
    views_options = sorted({v for v in views_options if v <= available})
    scalings = SCALINGS if int8 is not None else SCALINGS[:1]
    grid = sorted(grid)
    folds = fold_count(labels)
    scores: dict[Recipe, list[tuple]] = {}
    with one_blas_thread():
        for train_idx, test_idx in grouped_folds(labels, folds, seed):
            # The int8 features as the export will see them: less the mean shift that its bias correction removes.
            held_out = [features[test_idx]] + ([int8[test_idx] - bias_shift(features[train_idx], int8[train_idx])]
                                               if int8 is not None else [])
            for views in views_options:
                rows = view_rows(train_idx, views, n)
                y_rows = labels[rows % n]
                for scaling in scalings:
                    scaler_int8 = int8[train_idx] if int8 is not None else None
                    for cw in class_weight_options:
                        results = _scores_over_C(_scaler(scaling, features[train_idx], scaler_int8), features[rows], y_rows,
                                                 held_out, labels[test_idx], _weights(y_rows, cw, n_classes), grid)
                        for C, r in zip(grid, results):
                            scores.setdefault(Recipe(views, cw, C, scaling), []).append(r)
    mean = {r: np.mean(np.array(v, dtype=float), axis=0) for r, v in scores.items()}  # (acc, int8 acc, agreement)
    best = max(mean, key=lambda r: mean[r][0])
    # The one-standard-error rule: any recipe within one standard error of the best fold mean is as good as
    # the data can tell. On Tux Paint (356 images) the best recipe's folds spread by 3 points, and the CV's
    # favourite (two views, balanced) scored 4 validation images under the plain probe.
    standard_error = float(np.std([f[0] for f in scores[best]]) / np.sqrt(folds))
    eligible = [r for r in mean if mean[r][0] >= mean[best][0] - max(TIE, standard_error)]
    if int8 is not None:  # among those, the one an int8 export keeps closest to the float model
        best_agree = max(mean[r][2] for r in eligible)
        eligible = [r for r in eligible if mean[r][2] >= best_agree - TIE]
    chosen = min(eligible, key=Recipe.simplicity)
    table = [_row(r, mean[r], scores[r]) for r in sorted(mean, key=lambda r: (-mean[r][0], r.simplicity()))]
    m = mean[chosen]
    choice = RecipeChoice(chosen, float(m[0]), folds, time.perf_counter() - t, table,
                          int8_agreement=None if int8 is None else float(m[2]), int8_accuracy=None if int8 is None else float(m[1]))
    log(choice.summary())
    return choice


def _row(r: Recipe, m: np.ndarray, per_fold: list[tuple]) -> dict:
    row = {**asdict(r), "cv_accuracy": round(float(m[0]), 4), "cv_spread": round(float(np.std([f[0] for f in per_fold])), 4)}
    if per_fold[0][1] is not None:
        row["cv_int8_accuracy"], row["cv_int8_agreement"] = round(float(m[1]), 4), round(float(m[2]), 4)
    return row


def fit_recipe(features: np.ndarray, labels: np.ndarray, n_classes: int, recipe: Recipe,
               int8: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The chosen recipe fitted on every training image (and its views): (W, b) for the head's Dense layer,
    the scaler folded in. `int8`: the int8 features of the originals, needed by the int8-error scaling."""
    from sklearn.linear_model import LogisticRegression

    n = len(labels)
    rows = view_rows(np.arange(n), recipe.views, n)
    y = labels[rows % n]
    scaler = _scaler(recipe.scaling, features[:n], int8)
    with converging_quietly(), one_blas_thread():
        x = scaler.fit(features[rows]).transform(features[rows])
        linear = LogisticRegression(C=recipe.C, max_iter=MAX_ITER).fit(x, y, sample_weight=_weights(y, recipe.class_weights, n_classes))
    coef, intercept = fold_scaler(scaler, linear)
    if n_classes > 2 and coef.shape[0] != n_classes:  # a class absent from training: no row for it
        raise ValueError(f"expected {n_classes} classes in the training labels, found {coef.shape[0]}")
    return coef.T.astype(np.float32), intercept.astype(np.float32)
