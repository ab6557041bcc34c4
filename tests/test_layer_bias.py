"""Per-layer bias correction of int8 files (exporter/layer_bias.py): only biases change, and what each
corrected layer's output carried as a mean shift against the float graph is gone."""

import shutil

import numpy as np
import pytest

from exporter import layer_bias

SIZE = 48


@pytest.fixture(scope="module")
def features_model():
    """A small MobileNet-like stack with random weights and biases (a random MobileNetV2's batch norms leave
    its outputs at ~0, and a zero bias is dropped from the ONNX graph): convs with fused ReLU6, a depthwise
    conv, a linear projection, pooled features."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    bias = dict(bias_initializer=keras.initializers.RandomNormal(0.0, 0.1))
    x = inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = layers.ReLU(6.0)(layers.Conv2D(16, 3, strides=2, padding="same", **bias)(x))
    x = layers.ReLU(6.0)(layers.DepthwiseConv2D(3, padding="same", **bias)(x))
    x = layers.Conv2D(8, 1, **bias)(x)  # a linear bottleneck, as MobileNetV2 projects
    x = layers.ReLU(6.0)(layers.Conv2D(48, 1, **bias)(x))
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(x))


@pytest.fixture(scope="module")
def images():
    # Smooth random images: neighbouring pixels correlate, as in photos, so activations are not pure noise.
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (24, SIZE // 8, SIZE // 8, 3)).astype(np.float32)
    return np.clip(coarse.repeat(8, 1).repeat(8, 2) + rng.normal(0, 12, (24, SIZE, SIZE, 3)), 0, 255).astype(np.float32)


def _outputs(fmt, path, x):
    from edge_core.runtimes import RuntimeOptions, open_runtime

    rt = open_runtime(fmt, path, RuntimeOptions(threads=2))
    return np.concatenate([rt.run(x[i : i + 1]) for i in range(len(x))])


def _mean_shift(got, want) -> float:
    """Mean over features of |mean over images of (int8 - float)|: the shift every image shares."""
    return float(np.abs((got - want).mean(0)).mean())


def test_tflite_correction_changes_only_biases_and_removes_the_mean_shift(features_model, images, tmp_path, monkeypatch):
    from tensorflow.lite.tools import flatbuffer_utils

    from exporter import to_tflite

    seen = {}
    real = layer_bias.correct_tflite

    def spy(quantized, calibrated, *args, **kwargs):
        seen.update(quantized=quantized, calibrated=calibrated)
        return real(quantized, calibrated, *args, **kwargs)

    monkeypatch.setattr(layer_bias, "correct_tflite", spy)
    record = {}
    path = to_tflite.convert(features_model, "int8", tmp_path / "int8.tflite", images, tmp_path, log=lambda m: None,
                             io_dtype="float32", record=record)
    what = record["bias_correction"]
    assert what["method"] == "per-layer" and what["layers"] == 4 and what["images"] == len(images)
    before, after = (flatbuffer_utils.convert_bytearray_to_object(bytearray(b))
                     for b in (seen["quantized"], path.read_bytes()))
    assert [op.opcodeIndex for op in before.subgraphs[0].operators] == [op.opcodeIndex for op in after.subgraphs[0].operators]
    biases = {b for _, b in layer_bias._linear_int8_ops(before)}
    changed = {i for i, t in enumerate(before.subgraphs[0].tensors)
               if not np.array_equal(np.asarray(before.buffers[t.buffer].data), np.asarray(after.buffers[t.buffer].data))}
    assert changed and changed <= biases  # only bias tensors moved, and some did

    (tmp_path / "plain.tflite").write_bytes(seen["quantized"])
    (tmp_path / "float.tflite").write_bytes(seen["calibrated"])
    want = _outputs("tflite", tmp_path / "float.tflite", images)
    plain, corrected = _outputs("tflite", tmp_path / "plain.tflite", images), _outputs("tflite", path, images)
    assert _mean_shift(corrected, want) < 0.5 * _mean_shift(plain, want), (_mean_shift(corrected, want), _mean_shift(plain, want))


def test_onnx_correction_changes_only_biases_and_removes_the_mean_shift(features_model, images, tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    from exporter import to_onnx

    real = layer_bias.correct_onnx

    def spy(qdq_path, float_path, *args, **kwargs):
        shutil.copy(qdq_path, tmp_path / "plain.onnx")
        shutil.copy(float_path, tmp_path / "float.onnx")
        return real(qdq_path, float_path, *args, **kwargs)

    monkeypatch.setattr(layer_bias, "correct_onnx", spy)
    record = {}
    path = to_onnx.convert(features_model, "int8", tmp_path / "int8.onnx", images, tmp_path, log=lambda m: None,
                           record=record)
    assert record["bias_correction"]["method"] == "per-layer" and record["bias_correction"]["layers"] == 4, record
    before, after = onnx.load(str(tmp_path / "plain.onnx")), onnx.load(str(path))
    assert [(n.op_type, list(n.input), list(n.output)) for n in before.graph.node] == \
           [(n.op_type, list(n.input), list(n.output)) for n in after.graph.node]
    biases = {bias for _, bias, _, _ in layer_bias._onnx_layers(before)}
    after_init = {i.name: numpy_helper.to_array(i) for i in after.graph.initializer}
    changed = {i.name for i in before.graph.initializer if not np.array_equal(numpy_helper.to_array(i), after_init[i.name])}
    assert changed and changed <= biases
    assert [o.name for o in after.graph.output] == [o.name for o in before.graph.output]  # the probes' extra outputs are gone

    want = _outputs("onnx", tmp_path / "float.onnx", images)
    plain, corrected = _outputs("onnx", tmp_path / "plain.onnx", images), _outputs("onnx", path, images)
    assert _mean_shift(corrected, want) < 0.5 * _mean_shift(plain, want), (_mean_shift(corrected, want), _mean_shift(plain, want))
