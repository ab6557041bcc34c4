"""A run folder finds its images from any working directory, after it moves with its data, and says which
folder it expected when the data is gone."""

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import edgeport_cmd

from edge_server.cli import main
from exporter import ExportError
from exporter.run_images import part_items
from trainer.data import Split, make_split


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A small .keras classifier of the demo's three shapes (32 px): a run folder's model, made in a second."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    path = tmp_path_factory.mktemp("tiny") / "model.keras"
    model.save(path)
    return path


def make_project(root: Path, tiny_model: Path, monkeypatch) -> Path:
    """root/data (one folder per class) and root/runs/mine, its split written from root with a relative
    data path, as `edgeport train data` run in root writes it. Returns the run folder."""
    from trainer.demo_data import DemoDataConfig, generate

    generate(DemoDataConfig(root / "data", classes=3, per_class=12, size=32, seed=3))
    run = root / "runs" / "mine"
    run.mkdir(parents=True)
    shutil.copy(tiny_model, run / "model.keras")
    (run / "labels.txt").write_text("circle\nsquare\ntriangle\n")
    monkeypatch.chdir(root)
    make_split(Path("data"), seed=0).save(run / "split.json")
    return run


def export_run(run: Path, out: Path, *extra: str) -> int:
    return main(["export", str(run), "--format", "onnx", "--precision", "int8", "--min-agreement", "0",
                 "--out", str(out), *extra])


def test_split_json_stores_the_data_folder_absolute_and_from_the_run(tmp_path, tiny_model, monkeypatch):
    run = make_project(tmp_path / "proj", tiny_model, monkeypatch)
    d = json.loads((run / "split.json").read_text())
    assert d["roots"]["train"] == {"absolute": str(tmp_path / "proj" / "data"), "from_run_folder": "../../data"}
    assert all(not Path(p).is_absolute() and p.split("/")[0] in d["class_names"] for p, _ in d["train"] + d["val"])
    monkeypatch.chdir(tmp_path)
    split = Split.load(run / "split.json")  # the trainer's own reading, from elsewhere
    assert len(split.train) == 30 and all(Path(p).is_file() for p, _ in split.train + split.val)


def test_export_of_a_run_from_another_working_directory(tmp_path, tiny_model, monkeypatch, capsys):
    run = make_project(tmp_path / "proj", tiny_model, monkeypatch)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert export_run(run, tmp_path / "bundle") == 0
    out = capsys.readouterr().out
    assert "calibration: decoding 30 images" in out and "verify: 6 held-out images" in out
    assert "skipped" not in out


def test_export_after_the_run_and_its_data_moved_together(tmp_path, tiny_model, monkeypatch, capsys):
    run = make_project(tmp_path / "proj", tiny_model, monkeypatch)
    monkeypatch.chdir(tmp_path)
    shutil.move(tmp_path / "proj", tmp_path / "moved")  # the absolute path in split.json is gone
    assert export_run(tmp_path / "moved" / "runs" / "mine", tmp_path / "bundle") == 0
    assert not run.exists() and "calibration: decoding 30 images" in capsys.readouterr().out


def test_data_gone_is_one_line_naming_the_folder_then_data_finds_it(tmp_path, tiny_model, monkeypatch, capsys):
    run = make_project(tmp_path / "proj", tiny_model, monkeypatch)
    shutil.move(tmp_path / "proj" / "data", tmp_path / "kept")
    assert export_run(run, tmp_path / "bundle") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"Expected the run's validation images under {tmp_path / 'proj' / 'data'}" in err
    assert "Received: no such folder; pass --data DIR" in err
    assert not (tmp_path / "bundle").exists()
    assert export_run(run, tmp_path / "bundle", "--data", str(tmp_path / "kept")) == 0


def test_the_first_split_format_reads_relative_to_the_working_directory(tmp_path, monkeypatch):
    """split.json files written before the data roots: paths as the trainer was given them."""
    from trainer.demo_data import DemoDataConfig, generate

    generate(DemoDataConfig(tmp_path / "proj" / "data", classes=3, per_class=2, size=16, seed=1))
    old = {"class_names": ["circle", "square", "triangle"], "skipped": [], "val": [],
           "train": [[f"data/{c}/{f.name}", i] for i, c in enumerate(["circle", "square", "triangle"])
                     for f in sorted((tmp_path / "proj" / "data" / c).iterdir())]}
    run = tmp_path / "proj" / "runs" / "old"
    monkeypatch.chdir(tmp_path / "proj")
    items = part_items(old, "train", run)
    assert len(items) == 6 and all(Path(p).is_absolute() and Path(p).is_file() for p, _ in items)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExportError, match=r"relative to the folder the run was trained in.*pass --data DIR"):
        part_items(old, "train", run)
    shutil.move(tmp_path / "proj" / "data", tmp_path / "moved")
    items = part_items(old, "train", run, data=tmp_path / "moved")  # by class folder under --data
    assert all(Path(p).is_file() and "moved" in p for p, _ in items)


def test_edgeport_export_elsewhere_shows_bars_when_asked_and_no_tensorflow_lines(tmp_path, tiny_model, monkeypatch):
    """The command as a user runs it, from another folder: --progress draws bars on stderr (it is not a
    terminal here), and none of TensorFlow's start-up or converter lines appear without --verbose."""
    import os
    import subprocess

    run = make_project(tmp_path / "proj", tiny_model, monkeypatch)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "EDGEPORT_PROGRESS", "EDGEPORT_VERBOSE"))}
    proc = subprocess.run([*edgeport_cmd(), "export", str(run), "--format", "tflite", "--precision", "int8", "--min-agreement", "0",
                           "--out", str(tmp_path / "bundle"), "--progress"], cwd=tmp_path, env=env | {"PYTHONPATH": str(Path(__file__).parents[1])},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "calibration: decoding 30 images" in proc.stdout
    bars = proc.stderr.replace("\r", "\n")
    assert all(re.search(rf"^{step}: +\d+%\|", bars, re.M) for step in ("decoding", "calibration", "verify: Keras", "verify: exported"))
    noise = [l for l in bars.splitlines() if l.strip() and not any(l.startswith(d) for d in ("calibration", "decoding", "verify"))]
    assert noise == [], noise  # no "oneDNN custom operations", absl notices, "fully_quantize:", deprecation warnings
