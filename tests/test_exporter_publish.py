"""Publishing is all or nothing: a failed, crashed or killed export never leaves a valid-looking bundle
and never damages the bundle it was meant to replace."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import sabotage_weights
from edge_core.bundle import load_bundle, recover_interrupted
from edge_core.errors import BundleError
from edge_core.service import ModelService
from exporter import ExportConfig, ExportError, VerificationError, export


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def old_bundle(int8_bundle, tmp_path):
    """A published bundle at the destination the next export aims for."""
    dest = tmp_path / "bundles" / "shapes"
    shutil.copytree(int8_bundle, dest)
    return dest


def leftovers(dest):
    return [p for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")]




def test_failed_verification_over_an_existing_bundle_leaves_it_unchanged(trained_run, heldout_dir, old_bundle, monkeypatch):
    before = snapshot(old_bundle)
    sabotage_weights(monkeypatch)
    with pytest.raises(VerificationError, match="floor") as e:
        export(ExportConfig(source=trained_run.run_dir, format="tflite", precision="float32", images=heldout_dir,
                            out=old_bundle, verify_size=60), log=lambda m: None)
    assert "as it was" in str(e.value)
    assert snapshot(old_bundle) == before and not leftovers(old_bundle)
    assert ModelService.from_path(old_bundle).bundle.meta["precision"] == "int8"  # still loads, sha256 checked


def test_exception_mid_conversion_publishes_nothing(trained_run, heldout_dir, old_bundle, tmp_path, monkeypatch):
    """The converter has written part of a file when it dies: the old bundle stays, a new destination stays absent."""
    import exporter.to_tflite as T

    def crash(path):
        assert path.stat().st_size > 0  # the file was written...
        raise RuntimeError("simulated crash mid-conversion")  # ...and the converter dies before it is checked

    monkeypatch.setattr(T, "check_builtin_ops", crash)
    before = snapshot(old_bundle)
    fresh = tmp_path / "bundles" / "fresh"
    for dest in (old_bundle, fresh):
        with pytest.raises(ExportError, match="simulated crash"):
            export(ExportConfig(source=trained_run.run_dir, format="tflite", precision="float32", images=heldout_dir,
                                out=dest, verify_size=30), log=lambda m: None)
    assert snapshot(old_bundle) == before and not fresh.exists() and not leftovers(old_bundle) and not leftovers(fresh)


# Run in a child process: an export that stops for good at the worst moment, with
# the new bundle fully staged (model file and bundle.json written) but not yet renamed into place.
KILL_SCRIPT = r"""
import sys, time
from pathlib import Path
import edge_core.bundle as B
from exporter import ExportConfig, export

marker = Path(sys.argv[3])
real = B._fsync_dir

def stall(path):
    if ".partial-" in str(path):
        marker.write_text(str(path))
        time.sleep(600)
    real(path)

B._fsync_dir = stall
export(ExportConfig(source=Path(sys.argv[1]), format="tflite", precision="float32", out=Path(sys.argv[2]),
                    images=Path(sys.argv[4]), verify_size=20), log=lambda m: None)
"""


def test_export_killed_with_sigkill_leaves_the_old_bundle(trained_run, heldout_dir, old_bundle, tmp_path):
    before = snapshot(old_bundle)
    marker = tmp_path / "staged"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(trained_run.run_dir), str(old_bundle), str(marker), str(heldout_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the export never reached the staging step"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The destination is exactly the old bundle; it loads with its sha256 checked.
    assert snapshot(old_bundle) == before
    assert load_bundle(old_bundle).meta["precision"] == "int8"
    # What the kill left is a hidden staging folder, recognised as stale and removed by the next write.
    staged = leftovers(old_bundle)
    assert [p.name for p in staged] == [os.path.basename(marker.read_text())]
    recover_interrupted(old_bundle)
    assert leftovers(old_bundle) == [] and snapshot(old_bundle) == before


def test_stale_staging_is_cleared_a_live_one_kept_and_a_lone_old_copy_put_back(tmp_path):
    dest = tmp_path / "b"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    partial_dead = tmp_path / f".b.partial-{dead.pid}-1"
    partial_live = tmp_path / f".b.partial-{os.getpid()}-2"
    old_dead = tmp_path / f".b.old-{dead.pid}-3"
    for p in (partial_dead, partial_live, old_dead):
        p.mkdir()
    (old_dead / "marker").write_text("previous bundle")
    # dest missing: the process died mid-swap and .old is the only copy of the previous bundle -> put back
    recover_interrupted(dest)
    assert (dest / "marker").read_text() == "previous bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b", partial_live.name])
    # dest present: a dead writer's staging and set-aside copies both go; a live writer's stays
    for p in (partial_dead, old_dead):
        p.mkdir()
    recover_interrupted(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b", partial_live.name])


def test_sha256_mismatch_is_caught_on_load(int8_bundle, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(int8_bundle, damaged)
    model = damaged / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        ModelService.from_path(damaged)
    meta = json.loads((damaged / "bundle.json").read_text())
    assert len(meta["sha256"]) == 64
