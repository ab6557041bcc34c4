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
    """The square input size a model was built for (check_classifier has already refused anything else)."""
    return getattr(model, "_edgeport_size", None) or int(model.inputs[0].shape[1])


def check_classifier(model, image_size: int | None = None) -> int:
    """One image in, one row of class scores out, at a known square size: checked before any image is read.

    Returns the input size; `image_size` (--image-size) fixes a model built for any size.
    Each refusal names what was expected, what arrived and the next step.
    """
    from .errors import ExportError

    def shapes(tensors):
        return [tuple(t.shape) for t in tensors]

    if len(model.inputs) != 1:
        raise ExportError(f"Expected a classifier with one image input (N, H, W, 3). Received: {len(model.inputs)} inputs "
                          f"{shapes(model.inputs)}. Next step: export a model that takes only the image")
    if len(model.outputs) != 1:
        raise ExportError(f"Expected one output, the class scores (N, classes). Received: {len(model.outputs)} outputs "
                          f"{shapes(model.outputs)}. Next step: save keras.Model(model.inputs, model.outputs[i]) for the "
                          "output that holds the class scores, and export that")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3:
        kind = ("greyscale" if len(shape) == 4 and shape[3] == 1 else "channels first" if len(shape) == 4 and shape[1] == 3
                else "not an image (e.g. tabular features)" if len(shape) == 2 else f"rank {len(shape)}")
        raise ExportError(f"Expected an image input (N, H, W, 3): RGB, channels last. Received: input shape {shape}, {kind}. "
                          "Next step: edgeport exports image classifiers only; a greyscale model needs a 3-channel input")
    out = tuple(model.outputs[0].shape)
    if len(out) != 2:
        raise ExportError(f"Expected class scores shaped (N, classes). Received: output shape {out}. "
                          "Next step: end the model with pooling and a Dense layer over the classes")
    h, w = shape[1], shape[2]
    if h is None or w is None:
        if image_size is None:
            raise ExportError(f"Expected a fixed input size. Received: input shape {shape}, any size. "
                              "Next step: pass --image-size PX, the size the model was trained at")
        size = int(image_size)
    elif h != w:
        raise ExportError(f"Expected a classifier taking (N, H, W, 3) square images. Received: input shape {shape}")
    else:
        size = int(h)
        if image_size is not None and int(image_size) != size:
            raise ExportError(f"Expected --image-size to match the model's fixed input {size}. Received: --image-size {image_size}")
    model._edgeport_size = size  # the signature and the wrappers read it
    return size


def with_preprocessing(model, pre):
    """The model behind a fixed 1x1 convolution doing the declared preprocessing, so the graph takes raw 0-255 RGB.

    `pre` (edge_core.preprocessing.Preprocessing) is an affine map per pixel: channel reorder, then
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
    wrapped = keras.Model(inp, model(x), name=f"{model.name}_raw_rgb")
    wrapped._edgeport_size = size
    wrapped._edgeport_activation = getattr(model, "_edgeport_activation", None)
    return wrapped


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

    # A SavedModel or ONNX source hides its layers; its loader records what the graph ends with.
    act = getattr(model, "_edgeport_activation", None) or last_activation(model) or "linear"
    return act if act in ("softmax", "sigmoid") else "linear"
