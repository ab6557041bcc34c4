"""The walking skeleton end to end: demo data -> train -> export int8 -> same answers."""

import json
import subprocess
import sys

import numpy as np

from edge_core.service import ModelService
from exporter.calibration import folder_items, load_images


def keras_predictions(run_dir, x):
    import keras

    model = keras.models.load_model(run_dir / "model.keras", safe_mode=True)
    return model.predict(x.astype(np.float32), verbose=0)


def test_run_folder_has_model_labels_and_report(trained_run):
    run = trained_run.run_dir
    for name in ("model.keras", "labels.txt", "report.json", "split.json", "history.png", "confusion_matrix.png"):
        assert (run / name).is_file(), name
    report = json.loads((run / "report.json").read_text())
    for key in ("dataset_size", "similarity", "quadrant", "strategy", "head", "backbone", "trainable_layers", "frozen_layers", "metrics"):
        assert key in report
    assert report["strategy"] == 1 and report["quadrant"] is None  # weights=None: nothing to transfer
    assert (run / "labels.txt").read_text().split() == ["circle", "square", "triangle"]
    assert not list(run.parent.glob(".*partial*")), "no temporary folders left behind"


def test_trained_model_beats_chance_on_heldout_images(trained_run, heldout_dir):
    labels = trained_run.report["class_names"]
    x, y = load_images(folder_items(heldout_dir, labels), 64)
    acc = float((keras_predictions(trained_run.run_dir, x).argmax(1) == y).mean())
    assert acc >= 0.6, f"held-out accuracy {acc:.2f}; chance is 0.33"


def test_int8_tflite_gives_the_same_top1_as_keras(trained_run, int8_bundle, heldout_dir):
    svc = ModelService.from_path(int8_bundle)
    x, y = load_images(folder_items(heldout_dir, svc.labels), svc.size)
    ref = keras_predictions(trained_run.run_dir, x).argmax(1)
    got = svc.infer(x).argmax(1)
    agreement = float((ref == got).mean())
    assert agreement >= 0.97, agreement
    meta = json.loads((int8_bundle / "bundle.json").read_text())
    assert meta["precision"] == "int8" and meta["input"]["dtype"] == "uint8"
    assert meta["verification"]["top1_agreement"] >= 0.97


def test_predict_command_prints_labels_and_scores(int8_bundle, heldout_dir):
    image = sorted((heldout_dir / "triangle").glob("*.jpg"))[0]
    out = subprocess.run([sys.executable, "-m", "edge_server.cli", "predict", str(int8_bundle), str(image), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    scores = [p["score"] for p in answer["predictions"]]
    assert scores == sorted(scores, reverse=True) and {p["label"] for p in answer["predictions"]} <= {"circle", "square", "triangle"}
