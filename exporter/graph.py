"""The serving graph both converters start from.

A tf.function with one named input ("image": raw 0-255 RGB, float32, dynamic
batch) and one named output ("probs"), calling the model with
training=False so dropout and batch norm are in inference mode. For TFLite it
goes through a SavedModel (Keras 3 ExportArchive): converting the concrete
function directly fails in int8 calibration on resource variables.
"""

from __future__ import annotations

from pathlib import Path

INPUT_NAME = "image"
OUTPUT_NAME = "probs"


def input_size(model) -> int:
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[1] is None:
        from .errors import ExportError

        raise ExportError(f"Expected a classifier taking (N, H, W, 3) square images. Received: input shape {tuple(shape)}")
    return int(shape[1])


def signature(model):
    import tensorflow as tf

    size = input_size(model)
    return [tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)]


def serving_function(model):
    import tensorflow as tf

    @tf.function(input_signature=signature(model))
    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    return serve


def write_saved_model(model, directory: Path) -> Path:
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda image: {OUTPUT_NAME: model(image, training=False)}, input_signature=signature(model))
    archive.write_out(str(directory), verbose=False)
    return directory


def output_activation(model) -> str:
    """softmax / sigmoid / linear, read from the last layer that has an activation."""
    import keras

    def last_activation(layer):
        if isinstance(layer, keras.Model):
            for sub in reversed(layer.layers):
                act = last_activation(sub)
                if act:
                    return act
            return None
        act = getattr(layer, "activation", None)
        return getattr(act, "__name__", None) if act is not None else None

    act = last_activation(model) or "linear"
    return act if act in ("softmax", "sigmoid") else "linear"
