"""Bare model files from elsewhere: their preprocessing is declared (or read from the file), never assumed."""

import io
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import edgeport_cmd
from edge_server.app import create_app
from edge_core.errors import BundleError, EdgeError
from edge_core.preprocessing import declared
from edge_core.service import ModelService, ServiceOptions
from edge_server.settings import ServerSettings

SIZE = 16
LEVELS = {"dark": 25, "mid": 128, "light": 230}  # grey level -> the class a [0, 1] brightness model must answer


def png(rgb, size=40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), tuple(rgb)).save(buf, "PNG")
    return buf.getvalue()


def brightness_keras():
    """Expects [0, 1]: logits dark 0, mid 20m-5, light 40m-20 over mean brightness m. Fed raw 0-255, it says 'light' for anything."""
    import keras

    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    model.layers[-1].set_weights([np.tile(np.array([[0.0, 20 / 3, 40 / 3]], np.float32), (3, 1)),
                                  np.array([0.0, -5.0, -20.0], np.float32)])
    return model


@pytest.fixture(scope="module")
def unit_range_tflite(tmp_path_factory):
    """A bare .tflite straight from TFLiteConverter, expecting [0, 1], with its labels file."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("unit")
    (root / "brightness.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(brightness_keras()).convert())
    (root / "labels.txt").write_text("\n".join(LEVELS) + "\n")
    return root


MEAN_BGR, STD_BGR = (103.94, 116.78, 123.68), (57.4, 57.1, 58.4)  # caffe-style, in the model's (BGR) channel order


@pytest.fixture(scope="module")
def bgr_onnx(tmp_path_factory):
    """A bare .onnx whose logits are its input's mean colour, per BGR channel, as it expects: (BGR - mean) / std."""
    from onnx import TensorProto, helper, save

    root = tmp_path_factory.mktemp("bgr")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image", "axes"], ["m"], keepdims=0),
         helper.make_node("Mul", ["m", "gain"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "bgr_mean", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
                     helper.make_tensor("gain", TensorProto.FLOAT, [], [4.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    save(model, str(root / "bgr.onnx"))
    (root / "labels.txt").write_text("blue\ngreen\nred\n")
    return root


def test_bare_tflite_expecting_unit_range_is_wrong_undeclared_and_right_declared(unit_range_tflite):
    model, labels = unit_range_tflite / "brightness.tflite", unit_range_tflite / "labels.txt"
    raw = ModelService.from_path(model, labels, ServiceOptions(pool_size=1, threads=1, solo_threads=0))
    assert len(raw.warnings) == 1 and "--input-range" in raw.warnings[0]
    assert {raw.predict_bytes(png([v] * 3), 1)[0][0]["label"] for v in LEVELS.values()} == {"light"}  # the silent failure
    ok = ModelService.from_path(model, labels, ServiceOptions(pool_size=1, threads=1, solo_threads=0,
                                                              preprocessing=declared(input_range="0-1")))
    assert ok.warnings == []
    for label, level in LEVELS.items():
        assert ok.predict_bytes(png([level] * 3), 1)[0][0]["label"] == label
    info = ok.describe()
    assert info["preprocessing"]["origin"] == "declared" and info["preprocessing"]["applied_by"] == "server"
    assert info["input"]["value_range"] == [0.0, 1.0]


def test_bare_onnx_expecting_bgr_mean_std_served_over_http_once_declared(bgr_onnx):
    pre = declared(mean=",".join(map(str, MEAN_BGR)), std=",".join(map(str, STD_BGR)), color_order="BGR")
    svc = ModelService.from_path(bgr_onnx / "bgr.onnx", bgr_onnx / "labels.txt",
                                 ServiceOptions(pool_size=1, threads=1, solo_threads=0, preprocessing=pre))
    client = create_app(svc, ServerSettings(bundle=bgr_onnx / "bgr.onnx", access_log=False)).test_client()
    for rgb, label in (((250, 20, 20), "red"), ((20, 250, 20), "green"), ((20, 20, 250), "blue"), ((130, 120, 110), "red")):
        body = client.post("/predict", data=png(rgb), content_type="image/png").get_json()
        bgr = np.array(rgb[::-1], np.float32)
        logits = 4.0 * (bgr - MEAN_BGR) / STD_BGR
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        top = body["predictions"][0]
        assert top["label"] == label and abs(top["score"] - expected.max()) < 1e-4, (rgb, body)
    model = client.get("/model").get_json()
    assert model["preprocessing"]["color_order"] == "BGR" and model["preprocessing"]["mean"] == list(MEAN_BGR)
    assert model["input"]["color_order"] == "BGR" and model["warnings"] == []
    page = client.get("/").get_data(as_text=True)
    assert "preprocessing" in page  # the page shows /model's preprocessing row


def test_preprocessing_flags_on_a_bundle_are_refused(tmp_path, bgr_onnx):
    from edge_core.bundle import write_bundle

    bundle = write_bundle(tmp_path / "b", bgr_onnx / "bgr.onnx", {
        "name": "b", "format": "onnx", "labels": ["blue", "green", "red"],
        "input": {"shape": [-1, SIZE, SIZE, 3], "dtype": "float32"}, "output": {"shape": [-1, 3], "dtype": "float32"}})
    with pytest.raises(BundleError, match=r"only with a bare .tflite/.onnx.*Received: RGB, pixels mapped to 0-1"):
        ModelService.from_path(bundle, options=ServiceOptions(preprocessing=declared(input_range="0-1")))


@pytest.mark.parametrize("kw, match", [
    (dict(input_range="0-1", mean="1,2,3"), "either --input-range or --mean/--std"),
    (dict(mean="1,2"), "three comma-separated numbers"),
    (dict(std="0"), "not zero"),
    (dict(input_range="0-2"), "--input-range one of"),
])
def test_bad_preprocessing_flags_are_one_line_errors(kw, match):
    with pytest.raises(EdgeError, match=match):
        declared(**kw)


def test_minus_one_to_one_has_a_spelling_argparse_accepts():
    from edge_server.cli import build_parser

    for argv in (["--input-range=-1-1"], ["--input-range", "minus1-1"]):
        args = build_parser().parse_args(["predict", "m.tflite", "x.jpg", *argv])
        pre = declared(args.input_range)
        assert pre.mean == (127.5,) * 3 and pre.std == (127.5,) * 3 and pre.value_range() == [-1.0, 1.0]


def test_cli_predict_and_serve_take_the_flags(unit_range_tflite, tmp_path):
    import subprocess

    img = tmp_path / "dark.png"
    img.write_bytes(png([25] * 3))
    base = [*edgeport_cmd(), "predict", str(unit_range_tflite / "brightness.tflite"), str(img), "--json",
            "--labels", str(unit_range_tflite / "labels.txt")]
    raw = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert json.loads(raw.stdout)["predictions"][0]["label"] == "light"
    assert [l for l in raw.stderr.splitlines() if "warning" in l][0].startswith("edgeport predict: warning: brightness.tflite")
    ok = subprocess.run([*base, "--input-range", "0-1"], capture_output=True, text=True, timeout=60)
    assert json.loads(ok.stdout)["predictions"][0]["label"] == "dark" and "warning" not in ok.stderr


def model_metadata(mean, std, labels_file: str) -> bytes:
    """A ModelMetadata flatbuffer (tflite-support's metadata_schema.fbs, "M001") as MediaPipe Model Maker writes
    one for an image classifier: ImageProperties(RGB) and NormalizationOptions on the input, a TENSOR_AXIS_LABELS
    file on the output. Built with the flatbuffers package: tflite-support pins protobuf < 4, TensorFlow 2.21 needs 5+."""
    import flatbuffers

    b = flatbuffers.Builder(256)

    def floats(values):
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependFloat32(v)
        return b.EndVector()

    def offsets(items):
        b.StartVector(4, len(items), 4)
        for o in reversed(items):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    def table(fields):  # [(slot, "off"|"i8"|"u8", value)]
        b.StartObject(max(f[0] for f in fields) + 1)
        for slot, kind, value in fields:
            {"off": b.PrependUOffsetTRelativeSlot, "i8": b.PrependInt8Slot, "u8": b.PrependUint8Slot}[kind](slot, value, 0)
        return b.EndObject()

    norm = table([(0, "off", floats(mean)), (1, "off", floats(std))])
    unit = table([(0, "u8", 1), (1, "off", norm)])  # ProcessUnitOptions.NormalizationOptions
    props = table([(0, "i8", 1)])  # ImageProperties, color_space RGB
    content = table([(0, "u8", 2), (1, "off", props)])  # ContentProperties.ImageProperties
    in_name = b.CreateString("image")
    tin = table([(0, "off", in_name), (3, "off", content), (4, "off", offsets([unit]))])
    fname = b.CreateString(labels_file)
    afile = table([(0, "off", fname), (2, "i8", 2)])  # TENSOR_AXIS_LABELS
    out_name = b.CreateString("probability")
    tout = table([(0, "off", out_name), (6, "off", offsets([afile]))])
    sub = table([(2, "off", offsets([tin])), (3, "off", offsets([tout]))])
    name = b.CreateString("brightness classifier")
    root = table([(0, "off", name), (3, "off", offsets([sub]))])
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def with_metadata(tflite: bytes, metadata: bytes, files: dict) -> bytes:
    """Put `metadata` in the model as its TFLITE_METADATA buffer and append `files` as a zip, as the metadata populator does."""
    import io
    import zipfile

    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    buf = schema.BufferT()
    buf.data = np.frombuffer(metadata, np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = "TFLITE_METADATA", len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    out = io.BytesIO(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    out.seek(0, 2)
    with zipfile.ZipFile(out, "a") as z:
        for fname, text in files.items():
            z.writestr(fname, text)
    return out.getvalue()


def test_tflite_with_model_metadata_is_served_with_its_own_labels_and_normalization(unit_range_tflite, tmp_path):
    from edge_core.tflite_metadata import read_tflite_metadata

    plain = unit_range_tflite / "brightness.tflite"
    assert read_tflite_metadata(plain) is None  # TFLiteConverter's own entries (min_runtime_version) are not Model Metadata
    path = tmp_path / "with_metadata.tflite"
    path.write_bytes(with_metadata(plain.read_bytes(), model_metadata([0.0], [255.0], "labels.txt"),
                                   {"labels.txt": "dark\nmid\nlight\n"}))
    found = read_tflite_metadata(path)
    assert found["preprocessing"] == {"mean": [0.0] * 3, "std": [255.0] * 3, "color_order": "RGB"}
    assert found["labels"] == ["dark", "mid", "light"] and found["color_space"] == "RGB"
    svc = ModelService.from_path(path, options=ServiceOptions(pool_size=1, threads=1, solo_threads=0))  # no flags, no --labels
    assert svc.warnings == [] and svc.labels == ["dark", "mid", "light"]
    assert svc.describe()["preprocessing"]["origin"] == "metadata"
    for label, level in LEVELS.items():
        assert svc.predict_bytes(png([level] * 3), 1)[0][0]["label"] == label
    # Declared flags win over the file's metadata (here: wrongly, to show they are the ones used).
    forced = ModelService.from_path(path, options=ServiceOptions(pool_size=1, threads=1, solo_threads=0,
                                                                 preprocessing=declared(input_range="0-255")))
    assert forced.preprocessing.origin == "declared"
    assert {forced.predict_bytes(png([v] * 3), 1)[0][0]["label"] for v in LEVELS.values()} == {"light"}


@pytest.mark.skipif(not os.environ.get("EDGEPORT_TFLITE_SUPPORT_PYTHON"),
                    reason="tflite-support needs its own venv (it pins protobuf < 4): scripts/test.sh makes one, or set "
                           "EDGEPORT_TFLITE_SUPPORT_PYTHON to a python with `pip install tflite-support`")
@pytest.mark.parametrize("quantized", [False, True], ids=["float", "uint8-input"])
def test_metadata_written_by_tflite_support_itself_is_read(unit_range_tflite, tmp_path, quantized):
    """The file is labelled by tflite-support's own image-classifier writer, the one Model Maker calls;
    the uint8 variant is what a full-integer Model Maker export looks like. The server (no flags, no
    --labels) must answer as the model answers raw pixels, which is what the Task Library feeds it."""
    from ai_edge_litert.interpreter import Interpreter

    src = unit_range_tflite / "brightness.tflite"
    if quantized:
        import tensorflow as tf

        conv = tf.lite.TFLiteConverter.from_keras_model(brightness_keras())
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        greys = np.random.default_rng(0).uniform(0, 1, 100)  # flat images: the model's input is a mean brightness
        conv.representative_dataset = lambda: ([np.full((1, SIZE, SIZE, 3), g, np.float32)] for g in greys)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.uint8
        src = tmp_path / "brightness_uint8.tflite"
        src.write_bytes(conv.convert())
    labels = tmp_path / "levels.txt"
    labels.write_text("\n".join(LEVELS) + "\n")
    out = tmp_path / "labelled.tflite"
    r = subprocess.run([os.environ["EDGEPORT_TFLITE_SUPPORT_PYTHON"], str(Path(__file__).with_name("tflite_support_writer.py")),
                        str(src), str(labels), "0", "255", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    svc = ModelService.from_path(out, options=ServiceOptions(pool_size=1, threads=1, solo_threads=0))
    assert svc.warnings == [] and svc.labels == list(LEVELS)
    assert svc.preprocessing.origin == "metadata" and svc.preprocessing.to_dict()["std"] == [255.0] * 3
    raw = Interpreter(str(out))
    raw.allocate_tensors()
    inp, outp = raw.get_input_details()[0], raw.get_output_details()[0]
    for label, level in LEVELS.items():
        answer = svc.predict_bytes(png([level] * 3), 1)[0][0]
        if quantized:  # the Task Library feeds a uint8 input raw pixels: the same answer, the same score
            raw.set_tensor(inp["index"], np.full((1, SIZE, SIZE, 3), level, np.uint8))
            raw.invoke()
            scores = (raw.get_tensor(outp["index"])[0].astype(float) - outp["quantization"][1]) * outp["quantization"][0]
            assert answer["index"] == int(scores.argmax()) and answer["score"] == pytest.approx(float(scores.max()))
        assert answer["label"] == label, (level, answer)
