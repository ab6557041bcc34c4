"""Issue 12's one-request OOMs and 500s, through the app (Flask test client) and the plain functions.

The memory budget (edge_server/budget.py): a request's peak is estimated from
Content-Length, bracket counts and image headers before the work, and admitted
or refused (413: never fits; 503 + Retry-After: not now).
"""

import io
import json
import shutil
import threading
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from edge_server.app import create_app
from edge_server.budget import MiB, Budget, parse_size, process_limit
from edge_core.errors import RequestError
from edge_server.errors import http_status
from edge_server.routes.common import json_limits
from edge_core.service import ModelService, ServiceOptions
from edge_server.settings import ServerSettings

KEY = "budget-test-key"
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def bundle_dir(int8_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("budget") / "bundles"
    shutil.copytree(int8_bundle, root / "shapes")
    return root / "shapes"


@pytest.fixture(scope="module")
def service(bundle_dir):
    return ModelService.from_path(bundle_dir, options=ServiceOptions(pool_size=1, solo_threads=0, warmup_runs=0))


@pytest.fixture()
def client(service, bundle_dir):
    app = create_app(service, ServerSettings(bundle=bundle_dir, api_key=KEY, access_log=False))
    app.extensions["edgeport"].budget.total = 256 * MiB  # the test process holds TensorFlow: set the budget itself
    app.extensions["edgeport"].budget.wait_s = 0.2
    return app.test_client()


def jpeg(h=96, w=128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def error(resp, status, *words):
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    msg = resp.get_json()["error"]
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)
    return msg


# --- the budget itself -----------------------------------------------------------------------------

def test_budget_refuses_what_never_fits_and_makes_others_wait_then_503():
    b = Budget(100 * MiB, wait_s=0.3)
    with pytest.raises(RequestError) as e:
        b.reserve(101 * MiB, "a huge thing")
    assert http_status(e.value) == 413
    held = b.reserve(80 * MiB, "first")
    t0 = time.monotonic()
    with pytest.raises(RequestError) as e:
        b.reserve(30 * MiB, "second")
    assert http_status(e.value) == 503 and e.value.details["retry_after"] and time.monotonic() - t0 >= 0.29
    threading.Timer(0.1, b.release, [held]).start()  # freed in time: the waiting request goes ahead
    b.wait_s = 2
    b.release(b.reserve(30 * MiB, "third"))
    assert b.used == 0 and b.refused == {"413": 1, "503": 1}


def test_the_limit_comes_from_the_tightest_of_setting_cgroup_and_profile():
    assert parse_size("600M") == 600 * MiB and parse_size("2G") == 2048 * MiB
    limit, source = process_limit(None, {"name": "raspberry-pi-4", "service": {"memory_max": "600M"}})
    assert limit <= 600 * MiB and source
    limit, source = process_limit(300 * MiB, {"name": "raspberry-pi-4", "service": {"memory_max": "600M"}})
    assert limit <= 300 * MiB


# --- one-request OOMs --------------------------------------------------------------------------------

@pytest.mark.parametrize("path,wrap", [
    ("/v1/models/{name}:predict", lambda rows: {"instances": [rows]}),
    ("/v2/models/{name}/infer", lambda rows: {"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": rows}]}),
])
def test_a_19_mib_body_of_empty_lists_is_refused_before_parsing(client, service, path, wrap):
    """The issue: 735 MB for one such request, 1.5 GB for four; the server OOM-killed in 2.5 s."""
    body = json.dumps(wrap([[]] * 6_700_000), separators=(",", ":")).encode()
    assert len(body) > 19 * MiB
    tracemalloc.start()
    t0 = time.perf_counter()
    resp = client.post(path.format(name=service.name), data=body, content_type="application/json", headers=AUTH)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    error(resp, 413, "Expected", "Received")
    # The test client holds the body (20 MB) itself; what the app adds on top must be small.
    assert peak < 2.5 * len(body), peak / MiB
    assert seconds < 2, seconds


def test_the_largest_valid_tensor_request_is_within_the_bounds(service):
    containers, values = json_limits(service.size)
    n = service.size
    assert values >= 32 * n * n * 3 and containers >= 32 * (n * n + n + 1)


def test_an_image_over_the_budget_is_413_and_one_that_waits_too_long_is_503(client, service):
    st = client.application.extensions["edgeport"]
    st.budget.total = 8 * MiB
    big = jpeg(1500, 2000)  # 3 Mpx: ~36 MB decoded at full scale
    service.decode_mode, mode = "exact", service.decode_mode
    try:
        error(client.post("/predict", data=big, content_type="image/jpeg", headers=AUTH), 413, "at most 8 MiB", "JPEG 2000x1500")
        st.budget.total = 64 * MiB
        held = st.budget.reserve(60 * MiB, "someone else")
        try:
            resp = client.post("/predict", data=big, content_type="image/jpeg", headers=AUTH)
            error(resp, 503, "busy", "retry")
            assert resp.headers["Retry-After"] == "2"
        finally:
            st.budget.release(held)
        assert client.post("/predict", data=big, content_type="image/jpeg", headers=AUTH).status_code == 200
        assert st.budget.used == 0  # every reservation was released at the end of its request
    finally:
        service.decode_mode = mode
    metrics = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert 'edgeport_memory_refusals_total{status="413"} 1' in metrics
    assert 'edgeport_memory_budget_bytes{kind="total"}' in metrics


# --- wrong answers and 500s in the JSON paths -------------------------------------------------------

def v2(service, data, datatype="UINT8"):
    n = service.size
    return {"inputs": [{"name": "x", "shape": [1, n, n, 3], "datatype": datatype, "data": data}]}


@pytest.mark.parametrize("datatype,bad,word", [("UINT8", True, "booleans"), ("UINT8", 100.9, "whole numbers"),
                                               ("FP32", False, "booleans"), ("UINT8", 256, "0-255")])
def test_v2_pixel_tensors_are_not_silently_cast(client, service, datatype, bad, word):
    n = service.size
    data = [7] * (n * n * 3)
    data[5] = bad
    resp = client.post(f"/v2/models/{service.name}/infer", json=v2(service, data, datatype), headers=AUTH)
    error(resp, 400, word)
    data[5] = 100
    assert client.post(f"/v2/models/{service.name}/infer", json=v2(service, data, datatype), headers=AUTH).status_code == 200


@pytest.mark.parametrize("path", ["/v1/models/{name}:predict", "/v2/models/{name}/infer"])
def test_a_5000_digit_integer_is_400_not_500(client, service, path):
    body = b'{"instances": [' + b"9" * 5000 + b'], "inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [' + b"9" * 5000 + b"]}]}"
    error(client.post(path.format(name=service.name), data=body, content_type="application/json", headers=AUTH), 400, "digits")


def test_v2_binary_header_with_a_huge_number_is_400(client, service):
    header = b'{"inputs": [{"name": "x", "shape": [' + b"9" * 5000 + b'], "datatype": "UINT8", "parameters": {"binary_data_size": 3}}]}'
    resp = client.post(f"/v2/models/{service.name}/infer", data=header + b"abc", content_type="application/octet-stream",
                       headers={**AUTH, "Inference-Header-Content-Length": str(len(header))})
    error(resp, 400, "Expected")
