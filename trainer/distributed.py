"""tf.distribute: the strategy a run trains under, who writes output, and the multi-worker loop."""

from __future__ import annotations

import json
import os

import numpy as np

from .evaluation import predict_batches, predicted_labels


def distribution(kind: str | None):
    import tensorflow as tf

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()  # the default, no-op strategy


def is_chief(kind: str | None) -> bool:
    """In multi-worker training only the chief (or worker 0 when there is none) writes output."""
    if kind != "multi_worker":
        return True
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = tf_config.get("task", {})
    if "chief" in tf_config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def distributed_fit(model, train_ds, x_va, y_va, *, lr: float, epochs: int, n_classes: int, class_weight,
                    global_batch: int, patience: int, log) -> dict:
    """A plain tf.distribute training loop with early stopping on validation loss.

    Keras 3's fit() does not run under MultiWorkerMirroredStrategy
    (keras-team/keras#20585: PerReplica values reach Keras); strategy.run does.
    Every worker holds the whole validation set and identical weights, so
    each validates locally and all reach the same early-stopping decision.
    """
    import keras
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    binary = n_classes == 2
    loss_fn = (keras.losses.BinaryCrossentropy if binary else keras.losses.SparseCategoricalCrossentropy)(reduction=None)
    optimizer = keras.optimizers.Adam(lr)
    optimizer.build(model.trainable_variables)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dist_ds = strategy.experimental_distribute_dataset(train_ds.with_options(options))

    cw = tf.constant([class_weight[c] for c in range(n_classes)] if class_weight else [1.0] * n_classes, tf.float32)

    def replica_step(x, y):
        weight = tf.gather(cw, tf.cast(y, tf.int32))
        y = tf.cast(tf.reshape(y, (-1, 1)), tf.float32) if binary else y
        with tf.GradientTape() as tape:
            per_example = loss_fn(y, model(x, training=True)) * weight
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(x, y):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, args=(x, y)), axis=None)

    history: dict[str, list] = {"loss": [], "val_loss": [], "val_accuracy": []}
    best, best_weights, wait = float("inf"), None, 0
    for epoch in range(epochs):
        losses = [float(train_step(x, y)) for x, y in dist_ds]
        probs = predict_batches(model, x_va)
        val_loss = float(np.mean(loss_fn(y_va.reshape(-1, 1).astype(np.float32) if binary else y_va, probs)))
        pred = predicted_labels(probs)
        history["loss"].append(float(np.mean(losses)))
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(float((pred == y_va).mean()))
        log(f"epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f} val_loss {val_loss:.4f} "
            f"val_accuracy {history['val_accuracy'][-1]:.4f}")
        if val_loss < best:
            best, best_weights, wait = val_loss, model.get_weights(), 0
        else:
            wait += 1
            if wait >= patience:
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    return history
