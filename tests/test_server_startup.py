"""Startup: a missing, corrupt, mismatched or unreadable model, a bad key file or a taken port is one
line on stderr and exit 2, with nothing announced as ready before it."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import free_port


def serve(bundle, *extra, port=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "edge_server", str(bundle), "--port", str(port or free_port()), *extra],
                          capture_output=True, text=True, timeout=timeout)


def assert_one_error_line(out, *words):
    """Exit 2, exactly one stderr line in the Expected/Received form, and no "ready" before it."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out
    assert lines[0].startswith("edgeport serve: error: Expected") and "Received:" in lines[0], lines[0]
    assert all(w in lines[0] for w in words), (words, lines[0])
    assert "ready" not in out.stdout and "serving" not in out.stdout, out.stdout
    return lines[0]


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


def test_a_busy_port_is_one_line_before_any_ready(int8_bundle):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        out = serve(int8_bundle, "--host", "127.0.0.1", port=port)
    assert_one_error_line(out, f"Expected port {port} on 127.0.0.1 to be free", "in use by another program", "--port")


def test_a_port_held_by_another_edgeport_names_it(int8_bundle, server):
    port = int(server.url.rsplit(":", 1)[1])
    for host in ("127.0.0.1", "0.0.0.0"):  # the wildcard is probed on loopback
        out = serve(int8_bundle, "--host", host, port=port)
        assert_one_error_line(out, f"in use by another edgeport server at http://127.0.0.1:{port}")


def test_a_host_that_is_not_this_machine_is_one_line(int8_bundle):
    assert_one_error_line(serve(int8_bundle, "--host", "192.0.2.1"), "Expected --host to be an address of this machine", "'192.0.2.1'")


UNREADABLE = {
    "bundle.json not JSON": (lambda b: (b / "bundle.json").write_bytes(b"\xff{not json"), "not valid JSON"),
    "model file a folder": (lambda b: ((b / "model.tflite").unlink(), (b / "model.tflite").mkdir()), "(a folder)"),
    "model file not a model": (lambda b: _rehash(b, b"not a flatbuffer" * 64), "LiteRT can load"),
}


def _rehash(bundle, data):
    """Model bytes replaced and bundle.json's sha256 updated: the file passes the hash, then fails to load."""
    import hashlib

    (bundle / "model.tflite").write_bytes(data)
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    (bundle / "bundle.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_an_unreadable_bundle_is_one_line(int8_bundle, tmp_path, kind):
    bundle = tmp_path / "b"
    shutil.copytree(int8_bundle, bundle)
    damage, word = UNREADABLE[kind]
    damage(bundle)
    assert_one_error_line(serve(bundle), word)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_a_model_file_without_read_permission_is_one_line(int8_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(int8_bundle, bundle)
    (bundle / "model.tflite").chmod(0)
    assert_one_error_line(serve(bundle), "Permission denied")


@pytest.mark.parametrize("content, word", [(None, "No such file"), (b"", "an empty file"), (b"\n  \n", "an empty file"),
                                           (b"\x00\xff\xfe", "UTF-8"), (b"two words", "one word"), ("folder", "Is a directory")])
def test_a_bad_key_file_is_one_line(int8_bundle, tmp_path, content, word):
    key = tmp_path / "key"
    if content == "folder":
        key.mkdir()
    elif content is not None:
        key.write_bytes(content)
    assert_one_error_line(serve(int8_bundle, "--api-key-file", str(key)), word)


def test_bind_holds_the_port_before_anything_loads():
    from edge_core.errors import EdgeError
    from edge_server.listen import bind

    sockets = bind("localhost", 0)  # 127.0.0.1 and ::1 where the machine has both: one port for all
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(ports) == 1
        with pytest.raises(EdgeError, match=r"Expected port \d+ on 127.0.0.1 to be free\. Received: in use by another program"):
            bind("127.0.0.1", ports.pop())
    finally:
        for s in sockets:
            s.close()
    with pytest.raises(EdgeError, match=r"Expected --port in 0-65535\. Received: 70000"):
        bind("127.0.0.1", 70000)
    with pytest.raises(EdgeError, match=r"Expected --host as an IP address or a name this machine resolves\. Received: 'no-such-host.invalid'"):
        bind("no-such-host.invalid", 8080)
