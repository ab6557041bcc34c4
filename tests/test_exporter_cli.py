"""The command line over the export functions: --device defaults, `edgeport bench`, bare .keras input, exit codes."""

import json
import re
import shutil

import pytest
from conftest import labelled_folder

from devices import DeviceError
from edge_core.service import ModelService
from edge_server.cli import main
from exporter import ExportConfig
from exporter.pipeline import _defaults


@pytest.mark.parametrize("device, expected", [
    ("jetson-orin-nano", ("onnx", "float16", 2)),
    ("jetson-nano", ("onnx", "float16", 2)),
    ("raspberry-pi-4", ("tflite", "int8", 2)),
    ("raspberry-pi-5", ("tflite", "int8", 2)),
    ("x86-64", ("tflite", "int8", 1)),
])
def test_device_profile_gives_the_defaults(device, expected):
    assert _defaults(ExportConfig(source=".", device=device)) == expected


def test_explicit_flags_win_over_the_device_profile():
    cfg = ExportConfig(source=".", device="jetson-orin-nano", format="tflite", precision="dynamic", threads=3)
    assert _defaults(cfg) == ("tflite", "dynamic", 3)
    assert _defaults(ExportConfig(source=".", device="raspberry-pi-4", precision="float32")) == ("tflite", "float32", 2)


def test_unknown_device_names_the_known_ones(capsys):
    with pytest.raises(DeviceError, match=r"raspberry-pi-4.*Received: device='pi9'"):
        _defaults(ExportConfig(source=".", device="pi9"))


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    """A .keras classifier built by hand (not by the trainer), its labels and a few images for it."""
    import keras

    root = tmp_path_factory.mktemp("handmade")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.save(root / "mine.keras")
    return labelled_folder(root, per_class=15, seed=7)


def test_export_a_handmade_keras_file_with_labels_through_the_cli(handmade, tmp_path, capsys):
    out = tmp_path / "mine.tflite-int8"
    code = main(["export", str(handmade / "mine.keras"), "--labels", str(handmade / "labels.txt"), "--format", "tflite",
                 "--precision", "int8", "--io-dtype", "int8", "--calibration", str(handmade / "images"),
                 "--images", str(handmade / "images"), "--min-agreement", "0.8", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "agreement" in printed and "p95 ms" in printed  # the verification table
    svc = ModelService.from_path(out)
    assert svc.labels == ["circle", "square", "triangle"] and svc.size == 32
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["name"] == "mine" and meta["input"]["dtype"] == "int8" and meta["export"]["calibration_images"] == 45
    assert meta["verification"]["top1_agreement"] >= 0.8


def test_cli_export_under_the_floor_exits_3_and_publishes_nothing(handmade, tmp_path, capsys, monkeypatch):
    import exporter.pipeline as E

    real = E.verify_export

    def worse(*args, **kwargs):  # the real figures, with agreement pushed under any floor
        return real(*args, **kwargs) | {"top1_agreement": 0.5}

    monkeypatch.setattr(E, "verify_export", worse)
    out = tmp_path / "never"
    code = main(["export", str(handmade / "mine.keras"), "--labels", str(handmade / "labels.txt"), "--format", "onnx",
                 "--precision", "float32", "--images", str(handmade / "images"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3 and "floor is 99.0%" in err and "answers changed" in err and not out.exists() and not list(tmp_path.glob(".never*"))


def test_cli_min_agreement_out_of_range_is_a_usage_error(handmade, capsys):
    code = main(["export", str(handmade / "mine.keras"), "--labels", str(handmade / "labels.txt"), "--format", "onnx",
                 "--precision", "float32", "--min-agreement", "1.5"])
    assert code == 2 and "Received: 1.5" in capsys.readouterr().err


def test_cli_forbidden_combination_exits_2_listing_rows(handmade, capsys):
    code = main(["export", str(handmade / "mine.keras"), "--labels", str(handmade / "labels.txt"), "--format", "onnx", "--precision", "dynamic"])
    err = capsys.readouterr().err
    assert code == 2 and "tflite/int8" in err and "Received: onnx/dynamic" in err


def test_bench_puts_bundles_side_by_side(trained_run, int8_bundle, heldout_dir, tmp_path, capsys):
    from exporter import export

    fp32 = tmp_path / "shapes.tflite-float32"
    export(ExportConfig(source=trained_run.run_dir, format="tflite", precision="float32", images=heldout_dir, out=fp32,
                        verify_size=30), log=lambda m: None)
    code = main(["bench", str(fp32), str(int8_bundle), "--images", str(heldout_dir), "--threads", "1", "--no-keras"])
    printed = capsys.readouterr().out.splitlines()
    assert code == 0
    header = next(i for i, l in enumerate(printed) if l.startswith("bundle"))
    assert "accuracy" in printed[header] and "agrees w/ first" in printed[header] and "p95 ms" in printed[header]
    rows = printed[header + 1: header + 3]
    assert rows[0].split()[:3] == [str(fp32), "tflite", "float32"] and rows[1].split()[:3] == [str(int8_bundle), "tflite", "int8"]
    recorded = next(i for i, l in enumerate(printed) if l.startswith("recorded at export"))
    assert recorded > header + 2 and "agreement" in printed[recorded + 1]


def test_bench_rows_measure_on_the_same_images(int8_bundle, heldout_dir):
    from exporter.bench import bench

    rows = bench([int8_bundle, int8_bundle], heldout_dir, threads=1, limit=30, keras=False, log=lambda m: None)
    assert "agreement_with_first" not in rows[0]["measured"] and rows[1]["measured"]["agreement_with_first"] == 1.0
    assert rows[0]["measured"]["accuracy"] == rows[1]["measured"]["accuracy"] > 0.6
    assert rows[0]["measured"]["images"] == 30 and rows[0]["recorded"]["images"] == json.loads(
        (int8_bundle / "bundle.json").read_text())["verification"]["images"]


def mislabelled_copy(heldout_dir, tmp_path, per_class: int = 10):
    """The held-out images, each class's put in the next class's folder: every label wrong."""
    classes = sorted(p.name for p in heldout_dir.iterdir() if p.is_dir())
    root = tmp_path / "mislabelled"
    for i, name in enumerate(classes):
        wrong = root / classes[(i + 1) % len(classes)]
        wrong.mkdir(parents=True)
        for image in sorted((heldout_dir / name).glob("*.jpg"))[:per_class]:
            shutil.copy(image, wrong / image.name)
    return root


def test_bench_on_a_mislabelled_folder_reports_the_accuracy_it_measured(int8_bundle, heldout_dir, tmp_path, capsys):
    from exporter.bench import bench

    recorded = json.loads((int8_bundle / "bundle.json").read_text())["verification"]
    rows = bench([int8_bundle], mislabelled_copy(heldout_dir, tmp_path), threads=1, log=print)
    measured = rows[0]["measured"]
    # The model is ~99% right on these images, so against the wrong folders it scores near 0; the Keras
    # model it was exported from (the run is here) is measured on the same images, and agrees.
    assert measured["images"] == measured["labelled"] == 30
    assert measured["accuracy"] < 0.1 and measured["keras_accuracy"] < 0.1 and measured["agreement_with_keras"] > 0.9
    assert recorded["exported_accuracy"] > 0.9  # what bundle.json says, from the export's own images
    out = capsys.readouterr().out
    measured_part, recorded_part = out.split("recorded at export")
    lines = measured_part.splitlines()
    head = re.split(r"\s{2,}", next(l for l in lines if l.startswith("bundle")))
    cells = dict(zip(head, re.split(r"\s{2,}", next(l for l in lines if l.startswith(str(int8_bundle))))))
    assert cells["accuracy"] == f"{100 * measured['accuracy']:.1f}%" and cells["keras acc"] == f"{100 * measured['keras_accuracy']:.1f}%"
    assert f"{100 * recorded['exported_accuracy']:.1f}%" in recorded_part
