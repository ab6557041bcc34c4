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
    probs = predict_batches(model, x)
    pred = predicted_labels(probs)
    cm = np.zeros((n_classes, n_classes), int)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    per_class = {}
    for i, name in enumerate(class_names):
        tp, col, row = cm[i, i], cm[:, i].sum(), cm[i].sum()
        per_class[name] = {
            "precision": float(tp / col) if col else 0.0,
            "recall": float(tp / row) if row else 0.0,
            "support": int(row),
        }
    return {"val_accuracy": float((pred == y).mean()) if len(y) else None, "confusion_matrix": cm.tolist(), "per_class": per_class}
