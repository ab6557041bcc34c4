"""API key, hot reload (endpoint and SIGHUP) under load, CORS allow-list: a second server with a key."""

import json
import re
import shutil
import signal
import threading
import time

import pytest

from conftest import http, start_server
from server_helpers import assert_json_error, first_image

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def keyed(int8_bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keyed")
    bundle = tmp / "bundle"
    shutil.copytree(int8_bundle, bundle)
    key_file = tmp / "key"
    key_file.write_text(KEY + "\n")
    srv = start_server(bundle, tmp, "--api-key-file", str(key_file), "--cors-origin", "http://app.example")
    srv.bundle = bundle
    yield srv
    srv.stop()


AUTH = {"X-API-Key": KEY}


def test_key_required_except_probes_and_page(keyed, heldout_dir):
    data = first_image(heldout_dir).read_bytes()
    assert_json_error(*http("POST", keyed.url + "/predict", data, {"Content-Type": "image/jpeg"}), 401, "API key", "no key")
    status, body, headers = http("POST", keyed.url + "/predict", data, {"Content-Type": "image/jpeg", "X-API-Key": "wrong"})
    assert status == 401 and "does not match" in body["error"] and headers["WWW-Authenticate"].startswith("Bearer")
    assert http("POST", keyed.url + "/predict", data, {"Content-Type": "image/jpeg", **AUTH})[0] == 200
    assert http("POST", keyed.url + "/predict", data, {"Content-Type": "image/jpeg", "Authorization": f"Bearer {KEY}"})[0] == 200
    assert http("GET", keyed.url + "/metrics")[0] == 401
    assert http("GET", keyed.url + "/v2/models/shapes")[0] == 401
    for path in ("/v2/health/live", "/v2/health/ready", "/"):
        assert http("GET", keyed.url + path)[0] == 200, path


def test_key_never_logged(keyed, heldout_dir):
    http("GET", keyed.url + "/v2/models/shapes", None, AUTH)
    http("GET", keyed.url + "/v2/models/shapes?key=" + KEY, None, {"Authorization": f"Bearer {KEY}"})
    time.sleep(0.2)
    log = keyed.log.read_text()
    assert KEY not in log
    lines = [json.loads(l) for l in log.splitlines() if l.startswith("{")]
    assert lines and {"ts", "method", "path", "status", "ms"} <= set(lines[-1])


def test_oversized_body_under_a_small_limit(int8_bundle, tmp_path):
    srv = start_server(int8_bundle, tmp_path, "--max-body-mb", "0.5")
    try:
        assert_json_error(*http("POST", srv.url + "/predict", b"\xff" * 600_000, {"Content-Type": "image/jpeg"}), 413,
                          "at most 524,288 bytes", "600,000")
    finally:
        srv.stop()


def test_cors_allow_list(keyed):
    _, _, headers = http("GET", keyed.url + "/v2/models/shapes", None, {"Origin": "http://app.example", **AUTH})
    assert headers["Access-Control-Allow-Origin"] == "http://app.example"
    _, _, headers = http("GET", keyed.url + "/v2/models/shapes", None, {"Origin": "http://evil.example", **AUTH})
    assert "Access-Control-Allow-Origin" not in headers
    status, _, headers = http("OPTIONS", keyed.url + "/predict", None, {"Origin": "http://app.example",
                                                                         "Access-Control-Request-Method": "POST"})
    assert status in (200, 204) and "POST" in headers["Access-Control-Allow-Methods"]


def test_cors_off_by_default(server):
    _, _, headers = http("GET", server.url + "/v2/health/live", None, {"Origin": "http://app.example"})
    assert "Access-Control-Allow-Origin" not in headers


def _hammer(url, data, stop, results):
    while not stop.is_set():
        status, body, _ = http("POST", url + "/predict?top_k=1", data, {"Content-Type": "image/jpeg", **AUTH})
        results.append((status, body.get("version") if isinstance(body, dict) else body))


def _reloads(keyed) -> float:
    text = http("GET", keyed.url + "/metrics", None, AUTH)[1]
    m = re.search(r'edgeport_model_reloads_total\{result="ok"\} (\S+)', text)
    return float(m.group(1)) if m else 0.0


def test_reload_under_load_swaps_without_failing_a_request(keyed, heldout_dir):
    data = first_image(heldout_dir, "square").read_bytes()
    meta_path = keyed.bundle / "bundle.json"
    original_meta = meta_path.read_text()
    model_path = keyed.bundle / "model.tflite"
    original_model = model_path.read_bytes()
    stop, per_thread = threading.Event(), [[] for _ in range(4)]
    threads = [threading.Thread(target=_hammer, args=(keyed.url, data, stop, r)) for r in per_thread]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        # 1. A new version of the bundle: swapped in while requests flow.
        meta = json.loads(original_meta)
        meta["version"] = "2"
        meta_path.write_text(json.dumps(meta))
        status, body, _ = http("POST", keyed.url + "/admin/reload", None, AUTH)
        assert status == 200 and body["reloaded"] and body["model"]["version"] == "2" and body["previous"]["version"] == "1"
        time.sleep(0.3)
        # 2. A damaged bundle: refused, the old one keeps serving, the error is reported.
        model_path.write_bytes(original_model[:1000])
        status, body, _ = http("POST", keyed.url + "/admin/reload", None, AUTH)
        assert_json_error(status, body, {"Content-Type": "application/json"}, 422, "still serving", "sha256")
        assert body["reloaded"] is False and body["serving"]["version"] == "2"
        time.sleep(0.3)
        # 3. SIGHUP reloads too.
        model_path.write_bytes(original_model)
        meta["version"] = "3"
        meta_path.write_text(json.dumps(meta))
        before = _reloads(keyed)
        keyed.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while _reloads(keyed) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _reloads(keyed) == before + 1
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
        model_path.write_bytes(original_model)
        meta_path.write_text(original_meta)
    results = [r for rs in per_thread for r in rs]
    assert len(results) > 20 and {s for s, _ in results} == {200}, [r for r in results if r[0] != 200][:3]
    assert {v for _, v in results} == {"1", "2", "3"}
    for rs in per_thread:  # each client saw the versions only move forward
        versions = [v for _, v in rs]
        assert versions == sorted(versions) and versions[-1] == "3", versions


def test_reload_needs_the_key(keyed):
    assert http("POST", keyed.url + "/admin/reload")[0] == 401
