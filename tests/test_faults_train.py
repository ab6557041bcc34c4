"""Fault injection on `edgeport train`: kills and full or unwritable disks never leave a run that looks valid."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer import TrainConfig, TrainerError, train

TINY = ["--backbone", "mobilenet_v2", "--alpha", "0.35", "--image-size", "32", "--weights", "none", "--epochs", "2"]


def valid_runs(out: Path) -> list[Path]:
    """Folders that a user (or `edgeport export`) would take for finished runs."""
    runs = []
    for d in out.iterdir() if out.exists() else []:
        if d.is_dir() and not d.name.startswith(".") and (d / "model.keras").is_file():
            runs.append(d)
    return runs


def run_is_complete(d: Path) -> bool:
    report = json.loads((d / "report.json").read_text())
    return (d / "labels.txt").is_file() and (d / "split.json").is_file() and "metrics" in report


def test_sigkill_at_random_points_never_leaves_a_valid_looking_run(small_demo_dir, tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "edge_server.cli", "train", str(small_demo_dir), *TINY, "--out", str(out), "--name", "r"]
    rng = random.Random(7)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for delay in sorted(rng.uniform(1.0, 12.0) for _ in range(3)):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        for d in valid_runs(out):  # a run folder only ever appears complete
            assert run_is_complete(d), d
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [d.name for d in valid_runs(out)] == ["r"] and run_is_complete(out / "r")
    assert not list(out.glob(".r.partial-*")), "stale temporary folders are cleaned up by the next run"


def test_unwritable_output_location_fails_before_training(small_demo_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(TrainerError, match="Expected a writable output folder"):
        train(TrainConfig(data_dir=small_demo_dir, out_dir=blocker / "runs", weights=None, image_size=32, alpha=0.35),
              log=lambda m: None)


def test_full_disk_while_saving_is_a_clear_error_and_leaves_nothing(small_demo_dir, tmp_path, monkeypatch):
    import trainer.report as report_mod

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_mod, "write_report", disk_full)
    out = tmp_path / "runs"
    with pytest.raises(TrainerError, match="No space left on device"):
        train(TrainConfig(data_dir=small_demo_dir, out_dir=out, name="full", weights=None, image_size=32, alpha=0.35,
                          epochs=1), log=lambda m: None)
    assert list(out.iterdir()) == []


def test_a_kill_between_the_publish_renames_is_repaired(tmp_path):
    from edge_core.atomic import recover_interrupted

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".r.old-{dead.pid}").mkdir()
    (tmp_path / f".r.old-{dead.pid}" / "model.keras").write_text("previous run")
    (tmp_path / ".r.partial-999999999").mkdir()
    recover_interrupted(tmp_path / "r")
    assert (tmp_path / "r" / "model.keras").read_text() == "previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
