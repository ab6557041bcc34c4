"""tf.data input pipelines: decoded pixels or cached features -> batches, the augmenter, class weights.

Augmentation lives here and never inside the model graph, so the exported model sees raw pixels only.
"""

from __future__ import annotations

import numpy as np


def augmenter(seed: int):
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.08, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomZoom(0.15, fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
        ],
        name="augment",
    )


def make_dataset(x, y, batch_size: int, *, shuffle: bool, augment: bool, seed: int):
    """Decoded pixels -> batched tf.data pipeline. Augmentation stays outside the model graph."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        aug = augmenter(seed)
        # Sequential on purpose: the random layers draw from one seed-generator variable, and parallel
        # calls race on it, so the same seed would train a different model each run (0.998 and 0.995 val;
        # one CI run's model had 6 of 540 answers flipped by fast decoding where a sequential one had 2,
        # under tests/test_decode_modes.py's floor). The map works on whole batches, so its ops still use
        # every core: the demo training took 206 s vs 200.
        ds = ds.map(lambda a, b: (aug(a, training=True), b))
    return ds.prefetch(tf.data.AUTOTUNE)


def feature_datasets(f_tr, y_tr, f_va, y_va, batch_size: int, seed: int):
    """Cached feature vectors -> (train, validation) pipelines for fitting a head alone.

    tf.data, not numpy arrays: with numpy, Keras rebuilds its data adapters for validation every
    epoch, which costs more than fitting a head (measured 5x)."""
    import tensorflow as tf

    train_ds = tf.data.Dataset.from_tensor_slices((f_tr, y_tr)).cache().shuffle(len(f_tr), seed=seed).batch(batch_size).prefetch(2)
    val_ds = tf.data.Dataset.from_tensor_slices((f_va, y_va)).batch(256).cache()
    return train_ds, val_ds


def balanced_class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """n / (k * count_c): every class weighs the same in the loss, whatever its image count."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return {c: float(len(y) / (n_classes * counts[c])) if counts[c] else 0.0 for c in range(n_classes)}
