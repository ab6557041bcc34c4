"""Which layers of the backbone train, and how many train or stay frozen."""

from __future__ import annotations

import numpy as np

from .backbones import block_index, count_blocks


def set_trainable(base, spec, top_blocks: int, keep_bn_frozen: bool = False) -> None:
    """Unfreeze exactly the top `top_blocks` blocks; batch norm stays frozen (inference mode)
    whenever any part of the base is frozen, and with `keep_bn_frozen` (pretrained weights) always:
    in training mode it normalizes by the batch, not by the statistics the pretrained weights
    expect (the quadrant study's full fine-tunes on digits trained at chance while validating at 88%)."""
    import keras

    total = count_blocks(spec, base.layers)
    blocks = block_index(spec, base.layers)
    base.trainable = top_blocks > 0
    if top_blocks <= 0:
        return
    partial = top_blocks < total
    for layer, b in zip(base.layers, blocks):
        trainable = b > total - top_blocks or (not partial)
        if (partial or keep_bn_frozen) and isinstance(layer, keras.layers.BatchNormalization):
            trainable = False
        layer.trainable = trainable


def layer_counts(model) -> dict:
    """Counts over layers that own weights, at every nesting depth."""
    import keras

    trainable = frozen = 0

    def walk(layer, parent_trainable=True):
        nonlocal trainable, frozen
        effective = parent_trainable and layer.trainable
        if isinstance(layer, keras.Model):
            for sub in layer.layers:
                walk(sub, effective)
        elif layer.weights:
            if effective and layer.trainable_weights:
                trainable += 1
            else:
                frozen += 1

    for layer in model.layers:
        walk(layer)
    return {
        "trainable_layers": trainable,
        "frozen_layers": frozen,
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "frozen_params": int(sum(np.prod(w.shape) for w in model.non_trainable_weights)),
    }
