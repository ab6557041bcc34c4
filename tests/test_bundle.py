"""Bundle format: atomic writes, sha256 checked on load, clear one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from edge_core import bundle as B
from edge_core.errors import BundleError


def meta(**kw):
    m = {"name": "m", "format": "tflite", "precision": "int8", "labels": ["a", "b"],
         "input": {"shape": [-1, 8, 8, 3]}, "output": {"shape": [-1, 2]}}
    m.update(kw)
    return m


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "src.tflite"
    p.write_bytes(b"\x00fake model bytes" * 10)
    return p


def test_write_then_load_roundtrip(tmp_path, model_file):
    dest = B.write_bundle(tmp_path / "b", model_file, meta())
    b = B.load_bundle(dest)
    assert b.name == "m" and b.labels == ["a", "b"] and b.model_path.read_bytes() == model_file.read_bytes()
    assert b.meta["schema_version"] == B.SCHEMA_VERSION and len(b.meta["sha256"]) == 64


def test_sha256_mismatch_is_caught(tmp_path, model_file):
    dest = B.write_bundle(tmp_path / "b", model_file, meta())
    with open(dest / "model.tflite", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(BundleError, match="does not match bundle.json"):
        B.load_bundle(dest)


def test_interrupted_write_leaves_nothing_that_loads_and_keeps_the_old_bundle(tmp_path, model_file, monkeypatch):
    dest = B.write_bundle(tmp_path / "b", model_file, meta(name="old"))

    def crash(*a, **k):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(B, "_write_synced", crash)
    with pytest.raises(KeyboardInterrupt):
        B.write_bundle(tmp_path / "b", model_file, meta(name="new"))
    assert B.load_bundle(dest).name == "old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    monkeypatch.undo()
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(B, "_write_synced", crash)
        B.write_bundle(tmp_path / "fresh", model_file, meta())
    assert not (tmp_path / "fresh").exists()


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda d: (d / "bundle.json").unlink(), "Expected bundle.json"),
        (lambda d: (d / "bundle.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "model.tflite").unlink(), "model file is missing"),
        (lambda d: (d / "bundle.json").write_text(json.dumps({"schema_version": 99})), "schema_version 1"),
    ],
)
def test_damaged_bundles_are_one_line_errors(tmp_path, model_file, damage, match):
    dest = B.write_bundle(tmp_path / "b", model_file, meta())
    damage(dest)
    with pytest.raises(BundleError, match=match):
        B.load_bundle(dest)


def test_missing_path_and_bad_bare_file(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        B.load_bundle(tmp_path / "nope")
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"x")
    with pytest.raises(BundleError, match=".tflite or .onnx"):
        B.load_bundle(bad)


def test_model_file_name_cannot_escape_the_bundle(tmp_path, model_file):
    dest = B.write_bundle(tmp_path / "b", model_file, meta())
    m = json.loads((dest / "bundle.json").read_text())
    m["model_file"] = "../src.tflite"
    (dest / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="model_file"):
        B.load_bundle(dest)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_bundle_set_aside_by_a_kill_is_put_back(tmp_path, model_file):
    dest = B.write_bundle(tmp_path / "b", model_file, meta(name="old"))
    os.replace(dest, tmp_path / f".b.old-{dead_pid()}-2")  # killed right after setting the old bundle aside
    B.write_bundle(tmp_path / "other", model_file, meta())  # unrelated names are untouched
    B.recover_interrupted(tmp_path / "b")
    assert B.load_bundle(tmp_path / "b").name == "old"
    assert not list(tmp_path.glob(".b.old-*"))
