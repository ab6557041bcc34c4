"""ONNX sources written by tf2onnx (a Keras model: NHWC input, BatchNormalization folded into a per-channel Mul)
convert through onnx2tf; where onnx2tf fails, one line names the step and the ONNX op."""

import importlib.util

import numpy as np
import pytest
from conftest import labelled_folder

from exporter import ExportConfig, ExportError, export

needs_tf2onnx = pytest.mark.skipif(importlib.util.find_spec("tf2onnx") is None, reason="tf2onnx is not installed (the train extra)")
needs_onnx2tf = pytest.mark.skipif(importlib.util.find_spec("onnx2tf") is None,
                                   reason="onnx2tf is not installed (scripts/setup.sh installs it; see docs/export.md)")
SIZE = 32


@pytest.fixture(scope="module")
def tf2onnx_nhwc(tmp_path_factory):
    """A Keras CNN with BatchNormalization written by tf2onnx: input (N, 32, 32, 3), the labels and images."""
    import keras
    import tensorflow as tf
    import tf2onnx

    root = labelled_folder(tmp_path_factory.mktemp("tf2onnx"), per_class=6, seed=11, size=SIZE)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 127.5, offset=-1), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax"),
    ])
    bn = model.layers[2]  # non-trivial statistics, so the folded Mul/Add carry real per-channel values
    bn.set_weights([np.linspace(0.5, 1.5, 8), np.linspace(-0.2, 0.2, 8), np.linspace(0, 0.3, 8), np.linspace(0.5, 2, 8)])
    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="image"),)
    tf2onnx.convert.from_function(tf.function(lambda x: model(x), input_signature=spec), input_signature=spec, opset=17,
                                  output_path=str(root / "keras_nhwc.onnx"))
    return root


@needs_tf2onnx
@needs_onnx2tf
def test_a_tf2onnx_nhwc_file_converts_and_agrees_with_onnxruntime(tf2onnx_nhwc, tmp_path):
    from exporter.source import check_onnx_source

    assert check_onnx_source(tf2onnx_nhwc / "keras_nhwc.onnx")["layout"] == "NHWC"
    result = export(ExportConfig(source=tf2onnx_nhwc / "keras_nhwc.onnx", labels=tf2onnx_nhwc / "labels.txt", format="tflite",
                                 precision="float32", images=tf2onnx_nhwc / "images", out=tmp_path / "out"), log=lambda m: None)
    v = result.meta["verification"]
    assert v["reference"].startswith("onnxruntime") and v["top1_agreement"] == 1.0 and v["max_abs_diff"] < 1e-4, v
    assert result.meta["input"]["size"] == SIZE and result.meta["output"]["activation"] == "softmax"


@needs_tf2onnx
def test_an_onnx2tf_failure_is_one_line_naming_the_step_and_the_op(tf2onnx_nhwc, tmp_path, monkeypatch):
    """What onnx2tf 1.29 printed for this file before it was prepared: a traceback, then its own ERROR lines."""
    import onnx

    import exporter.source as S

    mul = next(n.name for n in onnx.load(str(tf2onnx_nhwc / "keras_nhwc.onnx")).graph.node if n.op_type == "Mul" and "batch" in n.name)
    stderr = ("Traceback (most recent call last):\n  raise ex\nValueError: Exception encountered when calling layer "
              "\"tf.math.multiply_4\" (type TFOpLambda).\n\nDimensions must be equal, but are 30 and 8 with input shapes: "
              f"[?,30,30,8], [1,1,8,1].\n  \u2022 name='{mul}'\n\x1b[31mERROR:\x1b[0m onnx_op_name: {mul}\n"
              "\x1b[31mERROR:\x1b[0m Read this and deal with it.\n")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, _real=importlib.util.find_spec:
                        object() if name == "onnx2tf" else _real(name, *a))
    monkeypatch.setattr(S, "ONNX2TF_SCRIPT", f"import sys; sys.stderr.write({stderr!r}); sys.exit(1)")
    with pytest.raises(ExportError) as e:
        export(ExportConfig(source=tf2onnx_nhwc / "keras_nhwc.onnx", labels=tf2onnx_nhwc / "labels.txt", format="tflite",
                            precision="float32", images=tf2onnx_nhwc / "images", out=tmp_path / "out"), log=lambda m: None)
    msg = str(e.value)
    assert "\n" not in msg and "\x1b" not in msg, msg
    assert "(step: ONNX -> SavedModel)" in msg and f"at ONNX op Mul {mul!r}" in msg and "Dimensions must be equal" in msg, msg
    assert not (tmp_path / "out").exists()
