"""Issue 12's smaller findings: bundle.json types, reload names, paths in answers, the exposure warning,
orphaned export folders, the publish step repaired by readers, disk errors in one line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_core.bundle import load_bundle
from edge_core.errors import BundleError
from edge_core.service import ModelService, ServiceOptions
from edge_server.app import ServerState, create_app
from edge_server.serve import exposure_warning
from edge_server.settings import ServerSettings

KEY = "admin-test-key"
AUTH = {"X-API-Key": KEY}
DEAD_PID = 2**22 + 12345  # above Linux's pid_max default of 4,194,304: never a live process


def write_meta(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(b"not really a model")
    meta = {"schema_version": 1, "name": "m", "format": "tflite", "model_file": "model.tflite", "sha256": "0" * 64,
            "labels": ["a", "b"], "input": {"shape": [1, 8, 8, 3], "dtype": "uint8"}, "output": {"activation": "softmax"}}
    meta.update(changes)
    (folder / "bundle.json").write_text(json.dumps(meta) if "raw" not in changes else changes["raw"])
    return folder


@pytest.mark.parametrize("changes,word", [
    ({"labels": 3}, "'labels'"), ({"labels": "abc"}, "'labels'"), ({"name": 5}, "'name'"),
    ({"input": []}, "'input'"), ({"input": {"shape": "1x8"}}, "input.shape"), ({"sha256": None}, "'sha256'"),
    ({"raw": "[" * 100_000 + "]" * 100_000}, "nested too deeply"), ({"raw": "[1, 2]"}, "JSON object"),
])
def test_bundle_json_field_types_are_checked_in_one_line(tmp_path, changes, word):
    with pytest.raises(BundleError) as e:
        load_bundle(write_meta(tmp_path / "b", **changes))
    assert word in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_serve_with_a_bad_bundle_exits_2_with_one_line(tmp_path):
    folder = write_meta(tmp_path / "b", labels=3)
    proc = subprocess.run([sys.executable, "-m", "edge_server.cli", "serve", str(folder), "--port", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "'labels'" in proc.stderr and "Traceback" not in proc.stderr


def test_a_model_file_inside_a_bundle_is_not_loaded_bare(int8_bundle):
    with pytest.raises(BundleError) as e:
        load_bundle(int8_bundle / "model.tflite")
    assert "name the folder" in str(e.value)


def test_readers_repair_a_publish_killed_between_its_renames(int8_bundle, tmp_path):
    dest = tmp_path / "shapes"
    shutil.copytree(int8_bundle, tmp_path / f".shapes.old-{DEAD_PID}-1")  # the old bundle, set aside; the new never came
    assert load_bundle(dest).name and dest.is_dir()


def test_exposure_warning():
    s = ServerSettings(bundle=Path("b"))
    assert exposure_warning(s) is None
    s.host = "0.0.0.0"
    assert "without an API key" in exposure_warning(s)
    s.api_key = "k"
    assert exposure_warning(s) is None


@pytest.fixture(scope="module")
def keyed(int8_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("admin") / "bundles"
    shutil.copytree(int8_bundle, root / "shapes")
    write_meta(root / "bad-types", labels=3)
    svc = ModelService.from_path(root / "shapes", options=ServiceOptions(pool_size=1, solo_threads=0, warmup_runs=0))
    settings = ServerSettings(bundle=root / "shapes", api_key=KEY, access_log=False)
    app = create_app(svc, settings, load=lambda p: ModelService.from_path(p, options=ServiceOptions(pool_size=1, solo_threads=0, warmup_runs=0)))
    app.root = root
    return app


def reload(app, name):
    return app.test_client().post("/admin/reload", json={"bundle": name}, headers=AUTH)


@pytest.mark.parametrize("name,status", [("shapes\x00", 400), ("a" * 5000, 400), ("x/" + "b" * 300, 400),
                                         ("bad-types", 422), ("shapes/model.tflite", 422), ("/etc", 403)])
def test_reload_names_are_checked_and_answers_show_no_absolute_paths(keyed, name, status):
    resp = reload(keyed, name)
    body = resp.get_json()
    assert resp.status_code == status, body
    assert str(keyed.root) not in body["error"] and str(keyed.root.parent) not in body["error"], body["error"]


def test_get_model_shows_no_absolute_paths(keyed):
    text = keyed.test_client().get("/model", headers=AUTH).get_data(as_text=True)
    assert str(keyed.root) not in text
    for value in (json.loads(text).get("source") or {}).values():
        assert not (isinstance(value, str) and value.startswith("/")), value


def test_every_reload_failure_is_counted_even_unexpected_ones(keyed):
    st: ServerState = keyed.extensions["edgeport"]

    def broken_load(path):
        raise TypeError("'int' object is not iterable")

    real, st._load = st._load, broken_load
    try:
        with pytest.raises(BundleError):  # what the SIGHUP thread catches: it no longer dies uncounted
            st.reload()
        assert reload(keyed, "shapes").status_code == 422
    finally:
        st._load = real
    metrics = keyed.test_client().get("/metrics", headers=AUTH).get_data(as_text=True)
    assert 'edgeport_model_reloads_total{result="error"}' in metrics


def test_orphaned_export_folders_are_removed_only_when_their_owner_is_dead(tmp_path):
    from exporter.pipeline import clean_orphaned_workdirs

    dead = tmp_path / f"edgeport-export-{DEAD_PID}-abc"
    live = tmp_path / f"edgeport-export-{os.getpid()}-def"
    other = tmp_path / "edgeport-export-legacy"
    for d in (dead, live, other):
        d.mkdir()
    assert clean_orphaned_workdirs(tmp_path) == [dead]
    assert live.exists() and other.exists() and not dead.exists()


def test_an_unwritable_destination_fails_in_one_line_before_the_work(tmp_path):
    from exporter.errors import ExportError
    from exporter.pipeline import check_destination

    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError) as e:
        check_destination(tmp_path / "file" / "bundle", 1)
    assert "writable folder" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ExportError) as e:
        check_destination(tmp_path / "bundle", 1 << 60)
    assert "free" in str(e.value)
