"""Sources from elsewhere (legacy .h5, SavedModel, Lambda layers, any-size models) and the one-line errors
for what cannot be exported, each raised before a single image is decoded."""

import subprocess

import numpy as np
import pytest

from conftest import edgeport_cmd, labelled_folder
from exporter import ExportConfig, ExportError, export

SIZE = 32


def small_cnn(keras, input_shape=(SIZE, SIZE, 3)):
    return keras.Sequential([
        keras.Input(input_shape), keras.layers.Rescaling(1 / 127.5, offset=-1), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax"),
    ])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    import keras

    root = labelled_folder(tmp_path_factory.mktemp("zoo"), per_class=6, seed=5, size=SIZE)
    keras.utils.set_random_seed(0)
    cnn = small_cnn(keras)
    cnn.save(root / "legacy.h5")  # Keras 3 still writes (and reads) the legacy HDF5 format
    cnn.export(str(root / "saved"))  # a SavedModel with a serving_default signature
    small_cnn(keras, (None, None, 3)).save(root / "anysize.keras")
    inp = keras.Input((SIZE, SIZE, 3))
    feat = keras.layers.GlobalAveragePooling2D()(inp)
    keras.Model(inp, [keras.layers.Dense(3, activation="softmax")(feat), keras.layers.Dense(1)(feat)]).save(root / "two_outputs.keras")
    scaled = keras.layers.Lambda(lambda x: x / 255.0)(inp)  # no globals: its bytecode runs when loaded unsafely
    keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(scaled))).save(root / "lambda.keras")
    for name, shape in (("grey", (SIZE, SIZE, 1)), ("wide", (SIZE, 2 * SIZE, 3)), ("tabular", (8,))):
        i = keras.Input(shape)
        x = keras.layers.Flatten()(i) if len(shape) > 1 else i
        keras.Model(i, keras.layers.Dense(3, activation="softmax")(x)).save(root / f"{name}.keras")
    (root / "broken.h5").write_bytes(b"not an HDF5 file")
    return root


def run_export(zoo, tmp_path, model, fmt="tflite", **kw):
    return export(ExportConfig(source=zoo / model, labels=zoo / "labels.txt", format=fmt, precision="float32",
                               images=zoo / "images", out=tmp_path / "out", **kw), log=lambda m: None)


@pytest.mark.parametrize("model, fmt, kw", [
    ("legacy.h5", "tflite", {}),
    ("saved", "tflite", {}),
    ("saved", "onnx", {}),
    ("anysize.keras", "onnx", {"image_size": SIZE}),
    ("lambda.keras", "onnx", {"unsafe_deserialization": True}),
])
def test_foreign_sources_export_and_agree(zoo, tmp_path, model, fmt, kw):
    result = run_export(zoo, tmp_path, model, fmt, **kw)
    v = result.meta["verification"]
    assert v["top1_agreement"] == 1.0 and v["max_abs_diff"] < 1e-4, v
    assert result.meta["input"]["size"] == SIZE


@pytest.mark.parametrize("model, kw, words", [
    ("two_outputs.keras", {}, ["Expected one output", "Received: 2 outputs", "Next step"]),
    ("grey.keras", {}, ["Expected an image input (N, H, W, 3)", "greyscale"]),
    ("tabular.keras", {}, ["Expected an image input", "(None, 8)", "tabular"]),
    ("wide.keras", {}, ["square images", "(None, 32, 64, 3)"]),
    ("anysize.keras", {}, ["Expected a fixed input size", "--image-size"]),
    ("legacy.h5", {"image_size": 64}, ["--image-size to match", "32"]),
    ("lambda.keras", {}, ["Lambda layer", "--unsafe-deserialization"]),
    ("broken.h5", {}, ["Could not load", "re-save it as .keras"]),
    ("nothing.pt", {}, ["Expected a trainer run folder", "SavedModel", "does not exist"]),
])
def test_unsupported_models_are_one_line_errors_before_any_image_is_read(zoo, tmp_path, monkeypatch, model, kw, words):
    import exporter.pipeline as P

    def no_images(*a, **k):
        raise AssertionError("an image was decoded before the model was checked")

    monkeypatch.setattr(P.calib, "load_images", no_images)
    with pytest.raises(ExportError) as e:
        run_export(zoo, tmp_path, model, **kw)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_cli_error_is_the_only_line_on_stderr(zoo):
    """No TensorFlow/absl or XNNPACK INFO lines before the one-line error."""
    proc = subprocess.run([*edgeport_cmd(), "export", str(zoo / "two_outputs.keras"), "--labels", str(zoo / "labels.txt"),
                           "--format", "onnx", "--precision", "float32", "--images", str(zoo / "images")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeport export: error: Expected one output"), proc.stderr


def torchlike_onnx(path, size=SIZE):
    """What torch.onnx.export writes for a small CNN: NCHW float input named "input", expecting ImageNet-normalized [0, 1]."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)

    def w(name, shape, scale):
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["output"], axis=1)]
    graph = helper.make_graph(
        nodes, "torchlike", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        initializer=[w("w1", (8, 3, 3, 3), 0.5), w("b1", (8,), 0.1), w("w2", (16, 8, 3, 3), 0.5), w("b2", (16,), 0.1),
                     w("wf", (3, 16), 1.0), w("bf", (3,), 0.1)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))


IMAGENET = dict(mean="123.675,116.28,103.53", std="58.395,57.12,57.375")


def test_nchw_onnx_converts_to_tflite_int8_verified_against_onnxruntime(zoo, tmp_path):
    import importlib.util

    if importlib.util.find_spec("onnx2tf") is None:
        pytest.skip("onnx2tf is not installed (scripts/setup.sh installs it)")
    from edge_core.preprocessing import declared
    from edge_core.service import ModelService
    from exporter.source import OnnxReference, check_onnx_source

    torchlike_onnx(tmp_path / "torch.onnx")
    pre = declared(**IMAGENET)
    result = export(ExportConfig(source=tmp_path / "torch.onnx", labels=zoo / "labels.txt", format="tflite", precision="int8",
                                 images=zoo / "images", calibration=zoo / "images", out=tmp_path / "out", preprocessing=pre),
                    log=lambda m: None)
    v = result.meta["verification"]
    assert v["reference"].startswith("onnxruntime") and v["top1_agreement"] >= 0.93, v
    assert result.meta["output"]["activation"] == "softmax"
    # The bundle takes raw pixels: its answer for an image is ONNX Runtime's on the normalized NCHW tensor.
    svc = ModelService.from_path(tmp_path / "out")
    ref = OnnxReference(tmp_path / "torch.onnx", check_onnx_source(tmp_path / "torch.onnx"), pre)
    image = sorted((zoo / "images").rglob("*.jpg"))[0]
    x = svc.decode(image.read_bytes())[None]
    assert svc.infer(x).argmax() == ref(x).argmax()


def test_onnx_source_without_onnx2tf_is_a_one_line_error(zoo, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx2tf" else real(name, *a))
    torchlike_onnx(tmp_path / "torch.onnx")
    with pytest.raises(ExportError, match=r"needs onnx2tf. Received: it is not installed. Next step: pip install --no-deps onnx2tf"):
        export(ExportConfig(source=tmp_path / "torch.onnx", labels=zoo / "labels.txt", format="tflite", precision="float32",
                            images=zoo / "images"), log=lambda m: None)
