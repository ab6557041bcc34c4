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


def with_preprocessing(model, pre):
    """The model behind a fixed 1x1 convolution doing the declared preprocessing, so the graph takes raw 0-255 RGB.

    `pre` (edge_server.preprocessing.Preprocessing) is an affine map per pixel: channel reorder, then
    (x - mean) / std. As a Conv2D it converts to one builtin op in TFLite (int8 included) and in ONNX,
    and the verification's Keras reference runs the same wrapped model.
    """
    import keras

    w, b = pre.affine()
    size = input_size(model)
    inp = keras.Input((size, size, 3), name=INPUT_NAME)
    conv = keras.layers.Conv2D(3, 1, name="declared_preprocessing", trainable=False)
    x = conv(inp)
    conv.set_weights([w.reshape(1, 1, 3, 3), b])
    return keras.Model(inp, model(x), name=f"{model.name}_raw_rgb")


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
