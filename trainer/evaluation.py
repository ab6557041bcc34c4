"""Validation figures of a trained model: accuracy, confusion matrix and per-class precision/recall."""

from __future__ import annotations

import numpy as np


def predicted_labels(probs: np.ndarray) -> np.ndarray:
    """Class indices from the head's output: one sigmoid unit (binary) or one score per class."""
    return (probs[:, 0] > 0.5).astype(int) if probs.shape[1] == 1 else probs.argmax(1)


def predict_batches(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Direct batched calls: unlike Model.predict, these also work under every tf.distribute strategy."""
    return np.concatenate([np.asarray(model(x[i : i + batch_size].astype(np.float32), training=False))
                           for i in range(0, len(x), batch_size)])


def evaluate(model, x, y, n_classes: int, class_names: list[str]) -> dict:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    pred = predicted_labels(predict_batches(model, x))
    labels = list(range(n_classes))
    # scikit-learn refuses empty input; an empty validation set has an all-zero matrix and no accuracy.
    if not len(y):
        return {"val_accuracy": None, "confusion_matrix": np.zeros((n_classes, n_classes), int).tolist(),
                "per_class": {name: {"precision": 0.0, "recall": 0.0, "support": 0} for name in class_names}}
    cm = confusion_matrix(y, pred, labels=labels)
    precision, recall, _, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "support": int(support[i])}
                 for i, name in enumerate(class_names)}
    return {"val_accuracy": float((pred == y).mean()), "confusion_matrix": cm.tolist(), "per_class": per_class}
