"""Classifier heads on the pooled backbone features, and the assembled model.

Every head is a small Keras model from the pooled feature vector to class
scores, so it can be fit on cached features (strategy 3) and then plugged on
top of the base. Two classes use one sigmoid unit, more use softmax.

The SVM head is scikit-learn's LinearSVC (C by cross-validated grid search) on
standardized features. Its decision function is affine, so the scaler and the
SVM fold into one Dense layer ("svm_decision"): the saved Keras model and every
export contain it, and no scikit-learn is needed to serve.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from .errors import TrainerError

HEADS = ("fc", "gap", "svm")
SVM_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
# Heads that are one Dense layer ("scores") on the pooled features: on frozen features their
# fit is convex, so it is solved (logistic regression, trainer.head_recipe) instead of approached by SGD:
# 10 epochs of Adam on cached Tux Paint features stopped 2-13 points short of the solved optimum.
LINEAR_HEADS = ("gap", "svm")


def output_units(n_classes: int) -> tuple[int, str]:
    return (1, "sigmoid") if n_classes == 2 else (n_classes, "softmax")


def loss_for(n_classes: int) -> str:
    return "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"


def build_head(kind: str, feature_dim: int, n_classes: int, dropout: float = 0.2, fc_units: int = 256):
    """A Keras model: pooled features -> class scores, named "head"."""
    import keras

    units, activation = output_units(n_classes)
    inp = keras.Input((feature_dim,), name="features")
    if kind == "fc":
        x = keras.layers.Dense(fc_units, activation="relu", name="fc")(inp)
        x = keras.layers.Dropout(dropout, name="fc_dropout")(x)
    elif kind in ("gap", "svm"):  # svm: a trainable stand-in until the SVM is fit and folded in
        x = keras.layers.Dropout(dropout, name="dropout")(inp)
    else:
        raise TrainerError(f"Unknown head; expected one of {list(HEADS)}. Received: head={kind!r}")
    out = keras.layers.Dense(units, activation=activation, name="scores")(x)
    return keras.Model(inp, out, name="head")


def svm_head(weights: np.ndarray, bias: np.ndarray, n_classes: int):
    """A head whose Dense layer computes a fitted LinearSVC's decision_function."""
    import keras

    units, activation = output_units(n_classes)
    inp = keras.Input((weights.shape[0],), name="features")
    dense = keras.layers.Dense(units, name="svm_decision")
    logits = dense(inp)
    dense.set_weights([weights.astype(np.float32), bias.astype(np.float32)])
    out = keras.layers.Activation(activation, name="scores")(logits)
    return keras.Model(inp, out, name="head")


def search_C(pipe, param: str, grid, features: np.ndarray, labels: np.ndarray, seed: int):
    """(fitted GridSearchCV, folds): `pipe`'s regularization `param` over `grid`, by stratified k-fold
    cross-validation with as many folds (2-5) as the smallest class allows."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    folds = max(2, min(5, int(np.bincount(labels).min())))
    search = GridSearchCV(pipe, {param: list(grid)}, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), n_jobs=1)
    with converging_quietly():
        search.fit(features, labels)
    return search, folds


@contextlib.contextmanager
def converging_quietly():
    """Large C on separable data may stop at max_iter: the grid search still ranks C fairly, and the
    final fit is as good as the held-out checks say, so scikit-learn's ConvergenceWarning is noise here."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def fit_linear_svm(features: np.ndarray, labels: np.ndarray, seed: int = 0, log=print):
    """LinearSVC with C chosen by stratified k-fold grid search; returns (W, b, C, cv score, model).

    W and b fold the StandardScaler in: decision(x) = ((x - mu) / sd) @ coef.T + intercept
                                                    = x @ (coef / sd).T + (intercept - coef @ (mu / sd)).
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    pipe = make_pipeline(StandardScaler(), LinearSVC(dual="auto", max_iter=20000, random_state=seed))
    search, folds = search_C(pipe, "linearsvc__C", SVM_C_GRID, features, labels, seed)
    best = search.best_estimator_
    coef, intercept = fold_scaler(best.named_steps["standardscaler"], best.named_steps["linearsvc"])
    C = search.best_params_["linearsvc__C"]
    log(f"svm head: C={C} chosen by {folds}-fold cross-validation (accuracy {search.best_score_:.3f})")
    return coef.T, intercept, C, float(search.best_score_), best


# A feature's scale is at least this share of the mean scale. Without a floor, a near-constant
# feature (sd ~1e-4) got a weight ~1/sd once folded, harmless on the frozen features it was fit on,
# but fine-tuning moves them: the quadrant study's first full fine-tune started at a loss of 3,000.
SCALE_FLOOR = 0.1


def floored_scaler():
    """StandardScaler whose scales are floored (SCALE_FLOOR); fold_scaler folds it like any other."""
    from sklearn.preprocessing import StandardScaler

    class FlooredScaler(StandardScaler):
        def fit(self, X, y=None, sample_weight=None):
            super().fit(X, y, sample_weight)
            self.scale_ = np.maximum(self.scale_, SCALE_FLOOR * float(self.scale_.mean()) or 1.0)
            return self

    return FlooredScaler()


def fold_scaler(scaler, linear) -> tuple[np.ndarray, np.ndarray]:
    """(coef, intercept) of `linear` applied after `scaler`, as one affine map of the raw features."""
    sd = np.where(scaler.scale_ == 0, 1.0, scaler.scale_)
    coef = linear.coef_ / sd  # (units, dim)
    intercept = linear.intercept_ - (linear.coef_ * (scaler.mean_ / sd)).sum(axis=1)
    return coef, intercept


def assemble(spec, base, head, size: int):
    """raw 0-255 RGB -> normalization -> backbone -> global average pool -> head."""
    import keras

    from .backbones import normalization_layers

    inp = keras.Input((size, size, 3), name="image")
    x = inp
    for layer in normalization_layers(spec, size):
        x = layer(x)
    base.name = "backbone"
    # No training= argument here: a BatchNormalization layer runs in inference
    # mode exactly when it is frozen (Keras 3), which is what we want.
    x = base(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = head(pooled)
    model = keras.Model(inp, out, name="classifier")
    features = keras.Model(inp, pooled, name="feature_extractor")
    return model, features
