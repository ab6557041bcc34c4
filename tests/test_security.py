"""The security pass (SECURITY.md): traversal, the API key in logs, admin without a key, safe model loading."""

import json
import shutil

import pytest

from conftest import http, start_server

KEY = "s3cret-key-never-logged-7f1c"
AUTH = {"X-API-Key": KEY, "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def keyed(int8_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("sec")
    served = root / "bundles" / "shapes"
    shutil.copytree(int8_bundle, served)
    shutil.copytree(int8_bundle, root / "bundles" / "shapes-v2")
    (root / "key").write_text(KEY + "\n")
    srv = start_server(served, root, "--api-key-file", str(root / "key"))
    yield srv
    srv.stop()


@pytest.mark.parametrize("path", ["../../../etc", "/etc", "../../key", "shapes/../../key"])
def test_reload_cannot_reach_outside_the_bundle_folder(keyed, path):
    status, body, _ = http("POST", keyed.url + "/admin/reload", json.dumps({"bundle": path}).encode(), AUTH)
    assert status == 403 and "Expected a bundle inside" in body["error"], body


def test_reload_of_a_sibling_bundle_works(keyed):
    status, body, _ = http("POST", keyed.url + "/admin/reload", json.dumps({"bundle": "shapes-v2"}).encode(), AUTH)
    assert status == 200 and body["reloaded"], body


@pytest.mark.parametrize("name", ["..%2F..%2Fetc%2Fpasswd", "..", "shapes%00", "%2e%2e"])
def test_model_names_are_only_compared_never_used_as_paths(keyed, name):
    for url in (f"/v1/models/{name}", f"/v2/models/{name}", f"/v2/models/{name}/ready"):
        status, body, headers = http("GET", keyed.url + url, None, {"X-API-Key": KEY})
        assert 400 <= status < 500 and headers["Content-Type"].startswith("application/json"), (url, status, body)


def test_api_key_is_never_logged(keyed):
    http("POST", keyed.url + "/predict", b"not an image", {"X-API-Key": KEY, "Content-Type": "image/jpeg"})
    http("POST", keyed.url + "/predict", b"x", {"Authorization": f"Bearer {KEY}", "Content-Type": "image/jpeg"})
    http("POST", keyed.url + "/predict", b"x", {"X-API-Key": KEY + "-wrong", "Content-Type": "image/jpeg"})
    log = keyed.log.read_text()
    assert '"path": "/predict"' in log or "/predict" in log  # the requests were logged...
    assert KEY not in log  # ...but never the key, right or wrong


def test_admin_is_off_without_a_key(server):
    status, body, _ = http("POST", server.url + "/admin/reload", b"", {})
    assert status == 404 and "off" in body["error"]


def test_keras_models_load_in_safe_mode(tmp_path):
    """A .keras file with a Lambda layer (arbitrary Python) is refused, not executed."""
    import keras

    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda x: x * 2)(inp)
    path = tmp_path / "evil.keras"
    keras.Model(inp, out).save(path)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    from exporter import ExportError
    from exporter.source import resolve_source

    with pytest.raises(ExportError, match="Could not load"):
        resolve_source(path, tmp_path / "labels.txt").load_model()
