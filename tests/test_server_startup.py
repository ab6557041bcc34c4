"""Startup: a missing, corrupt or mismatched model is one line on stderr and a non-zero exit."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import free_port


def serve(bundle, *extra, timeout=60):
    return subprocess.run([sys.executable, "-m", "edge_server", str(bundle), "--port", str(free_port()), *extra],
                          capture_output=True, text=True, timeout=timeout)


def _damage(kind: str, bundle):
    meta_path = bundle / "bundle.json"
    if kind == "corrupt":
        data = bytearray((bundle / "model.tflite").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (bundle / "model.tflite").write_bytes(bytes(data))
        return "sha256"
    meta = json.loads(meta_path.read_text())
    if kind == "shape":
        meta["input"]["shape"] = [-1, 32, 32, 3]
        meta_path.write_text(json.dumps(meta))
        return "shape"
    if kind == "dtype":
        meta["input"]["dtype"] = "float32"
        meta_path.write_text(json.dumps(meta))
        return "dtype"
    if kind == "labels":
        meta["labels"] = ["only", "two"]
        meta_path.write_text(json.dumps(meta))
        return "labels"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "corrupt", "shape", "dtype", "labels"])
def test_bad_model_is_one_line_and_exit_2(int8_bundle, tmp_path, kind):
    bundle = tmp_path / "b"
    if kind == "missing":
        word = "does not exist"
    else:
        shutil.copytree(int8_bundle, bundle)
        word = _damage(kind, bundle)
    out = serve(bundle)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr
    errors = [l for l in out.stderr.splitlines() if "error" in l]
    assert len(errors) == 1 and errors[0].startswith("edgeport serve: error:") and word in errors[0], out.stderr


def test_missing_api_key_file_and_unknown_device(int8_bundle, tmp_path):
    out = serve(int8_bundle, "--api-key-file", str(tmp_path / "nope"))
    assert out.returncode == 2 and "API key file" in out.stderr and "Traceback" not in out.stderr
    out = serve(int8_bundle, "--device", "toaster")
    assert out.returncode == 2 and "toaster" in out.stderr and "Traceback" not in out.stderr


def test_device_profile_sets_pool_and_threads(int8_bundle, tmp_path):
    from conftest import start_server, http

    srv = start_server(int8_bundle, tmp_path, "--device", "raspberry-pi-4")
    try:
        body = http("GET", srv.url + "/model")[1]
        assert (body["pool_size"], body["threads_per_instance"]) == (2, 2)
    finally:
        srv.stop()
    srv = start_server(int8_bundle, tmp_path, "--device", "raspberry-pi-4", "--workers", "1", "--threads", "3")
    try:
        body = http("GET", srv.url + "/model")[1]
        assert (body["pool_size"], body["threads_per_instance"]) == (1, 3)  # explicit flags win
    finally:
        srv.stop()
