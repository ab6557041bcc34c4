"""Clients nobody here wrote, against a live server: they must work unchanged.

- openapi-spec-validator accepts /openapi.json as OpenAPI 3.1;
- openapi-python-client generates a client from it (into tmp), and that client
  calls every operation in the document, v2 infer with JSON tensors included;
- tritonclient (HTTP) with JSON and binary inputs, binary and JSON outputs, and the
  classification extension.

Each library is in the [dev] extra; a missing one skips its tests with the reason.
"""

from __future__ import annotations

import importlib
import inspect
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import http
from server_helpers import b64, first_image, post_json


@pytest.fixture(scope="module")
def live_doc(server):
    status, doc, _ = http("GET", server.url + "/openapi.json")
    assert status == 200
    return doc


# --------------------------------------------------------------------------- the document

def test_document_is_valid_openapi_3_1(live_doc):
    validator = pytest.importorskip("openapi_spec_validator", reason="openapi-spec-validator is in the [dev] extra")
    from openapi_spec_validator.validation import OpenAPIV31SpecValidator

    validator.validate(live_doc, cls=OpenAPIV31SpecValidator)


def _walk(node, where="$"):
    if isinstance(node, dict):
        yield where, node
        for k, v in node.items():
            yield from _walk(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{where}[{i}]")


def test_every_array_has_items_and_every_operation_a_unique_id(live_doc):
    no_items = [w for w, n in _walk(live_doc) if (n.get("type") == "array" or "array" in (n.get("type") or [])) and "items" not in n]
    assert not no_items, no_items
    ids = [o.get("operationId") for ops in live_doc["paths"].values() for o in ops.values()]
    assert all(ids) and len(ids) == len(set(ids)), ids


# --------------------------------------------------------------------------- a generated client

@pytest.fixture(scope="module")
def generated(live_doc, tmp_path_factory):
    """openapi-python-client's client for the live document, importable as `edgeport_api`."""
    pytest.importorskip("openapi_python_client", reason="openapi-python-client is in the [dev] extra")
    import json

    tmp = tmp_path_factory.mktemp("generated")
    (tmp / "openapi.json").write_text(json.dumps(live_doc))
    r = subprocess.run([sys.executable, "-m", "openapi_python_client", "generate", "--path", str(tmp / "openapi.json"),
                        "--meta", "none", "--output-path", str(tmp / "edgeport_api")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    # It warns only about the raw image/* request types of /predict, which it cannot express
    # (it sends application/octet-stream or multipart instead, both of which /predict takes).
    warnings = [l for l in r.stdout.splitlines() if l.startswith("WARNING")]
    assert all(l.startswith("WARNING parsing POST /predict") for l in warnings), r.stdout
    assert r.stdout.count("Unsupported content type image/") == len(warnings), r.stdout
    sys.path.insert(0, str(tmp))
    try:
        yield importlib.import_module("edgeport_api")
    finally:
        sys.path.remove(str(tmp))
        for mod in [m for m in sys.modules if m == "edgeport_api" or m.startswith("edgeport_api.")]:
            del sys.modules[mod]


def _request_bodies(api, heldout_dir, out_name: str) -> dict:
    """What each operation sends (by operationId, without the _version suffix)."""
    from edgeport_api.models import ReloadRequest, TFPredictRequest, V2InferRequest
    from edgeport_api.types import File

    jpeg = first_image(heldout_dir, "triangle").read_bytes()
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB").resize((64, 64)))
    return {
        "predict": File(payload=io.BytesIO(jpeg), file_name="t.jpg", mime_type="application/octet-stream"),
        "tfserving_predict": TFPredictRequest.from_dict({"instances": [{"b64": b64(jpeg)}]}),
        # v2 infer with a JSON tensor: UINT8 pixels, flat, as the spec's example
        "v2_infer": V2InferRequest.from_dict({
            "id": "gen", "inputs": [{"name": "image", "shape": [1, 64, 64, 3], "datatype": "UINT8", "data": pixels.ravel().tolist()}],
            "outputs": [{"name": out_name}]}),
        "admin_reload": ReloadRequest(),
    }


def test_generated_client_calls_every_operation(server, generated, live_doc, heldout_dir):
    from edgeport_api import Client
    from edgeport_api.models import Error, PredictResponse, TFPredictResponseType0, TFStatus, V2InferResponse

    client = Client(base_url=server.url, raise_on_unexpected_status=True, timeout=30)
    out_name = http("GET", server.url + "/v2/models/shapes")[1]["outputs"][0]["name"]
    bodies = _request_bodies(generated, heldout_dir, out_name)
    expected_status = {"favicon": 204, "admin_reload": 404}  # this server has no API key: admin endpoints are off
    results = {}
    for path, ops in live_doc["paths"].items():
        for method, op in ops.items():
            op_id = op["operationId"]
            fn = importlib.import_module(f"edgeport_api.api.default.{op_id}").sync_detailed
            params = inspect.signature(fn).parameters
            kwargs = {"client": client}
            # path parameters are enums of the live values; build them from the strings
            if "name" in params:
                kwargs["name"] = params["name"].annotation("shapes")
            if "version" in params:
                kwargs["version"] = params["version"].annotation("1")
            base = op_id.removesuffix("_version")
            if base in bodies:
                kwargs["body"] = bodies[base]
            resp = fn(**kwargs)
            assert resp.status_code == expected_status.get(base, 200), (method, path, resp.status_code, resp.content[:300])
            results[op_id] = resp.parsed
    assert len(results) == sum(len(ops) for ops in live_doc["paths"].values())
    top = http("POST", server.url + "/predict?top_k=1", first_image(heldout_dir, "triangle").read_bytes(),
               {"Content-Type": "image/jpeg"})[1]["predictions"][0]
    assert isinstance(results["predict"], PredictResponse) and results["predict"].predictions[0].label.value == top["label"]
    assert isinstance(results["tfserving_model_status"], TFStatus) and results["tfserving_model_status"].ready is True
    assert isinstance(results["tfserving_predict"], TFPredictResponseType0)
    assert np.argmax(results["tfserving_predict"].predictions[0]) == top["index"]
    infer = results["v2_infer"]
    assert isinstance(infer, V2InferResponse) and infer.id == "gen" and infer.outputs[0].shape == [1, 3]
    assert np.argmax(infer.outputs[0].data) == top["index"]
    assert isinstance(results["admin_reload"], Error) and "--api-key-file" in results["admin_reload"].error
    assert results["v2_server_live"].live is True and results["v2_model_ready"].ready is True


# --------------------------------------------------------------------------- tritonclient

@pytest.fixture(scope="module")
def triton(server):
    httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the [dev] extra")
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield httpclient, client
    client.close()


def test_tritonclient_health_and_metadata(triton):
    _, client = triton
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("shapes")
    meta = client.get_server_metadata()
    assert set(meta["extensions"]) == {"classification", "binary_tensor_data"}
    model = client.get_model_metadata("shapes")
    assert model["inputs"][0]["shape"] == [-1, 64, 64, 3] and model["outputs"][0]["shape"] == [-1, 3]


def _images(heldout_dir):
    return [first_image(heldout_dir, label).read_bytes() for label in ("circle", "square", "triangle")]


def _reference(server, images) -> np.ndarray:
    """The probabilities plain JSON v2 infer gives for these images: what every client must get back."""
    status, body, _ = post_json(server.url + "/v2/models/shapes/infer",
                                {"inputs": [{"name": "image", "shape": [len(images)], "datatype": "BYTES", "data": [b64(d) for d in images]}]})
    assert status == 200, body
    return np.reshape(body["outputs"][0]["data"], (len(images), -1))


def test_tritonclient_binary_inputs_and_binary_outputs(triton, heldout_dir, server):
    httpclient, client = triton
    out_name = client.get_model_metadata("shapes")["outputs"][0]["name"]
    images = _images(heldout_dir)
    reference = _reference(server, images)

    for binary_in in (True, False):
        for binary_out in (True, False):
            inp = httpclient.InferInput("image", [3], "BYTES")
            # In JSON a BYTES element is a string: images go as base64 there (tritonclient sends str as is)
            elements = images if binary_in else [b64(d) for d in images]
            inp.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary_in)
            out = httpclient.InferRequestedOutput(out_name, binary_data=binary_out)
            res = client.infer("shapes", [inp], outputs=[out], request_id="r1")
            probs = res.as_numpy(out_name)
            assert probs.dtype == np.float32 and probs.shape == (3, 3), (binary_in, binary_out)
            assert np.allclose(probs, reference, atol=1e-6)
            params = res.get_output(out_name).get("parameters", {})
            assert ("binary_data_size" in params) == binary_out, (binary_in, binary_out, params)
            assert res.get_response()["id"] == "r1"


def test_tritonclient_no_outputs_named_gets_binary_outputs(triton, heldout_dir, server):
    """With no outputs named, tritonclient asks for all of them as binary (request-level binary_data_output)."""
    httpclient, client = triton
    inp = httpclient.InferInput("image", [1], "BYTES")
    images = _images(heldout_dir)[2:]
    inp.set_data_from_numpy(np.array(images, dtype=np.object_))
    res = client.infer("shapes", [inp])
    (out,) = res.get_response()["outputs"]
    assert out["parameters"]["binary_data_size"] == 12
    assert np.allclose(res.as_numpy(out["name"]), _reference(server, images), atol=1e-6)


def test_tritonclient_uint8_pixels_binary(triton, heldout_dir, server):
    httpclient, client = triton
    out_name = client.get_model_metadata("shapes")["outputs"][0]["name"]
    x = np.stack([np.asarray(Image.open(io.BytesIO(d)).convert("RGB").resize((64, 64))) for d in _images(heldout_dir)])
    inp = httpclient.InferInput("image", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x, binary_data=True)
    res = client.infer("shapes", [inp], outputs=[httpclient.InferRequestedOutput(out_name, binary_data=True)])
    probs = res.as_numpy(out_name)
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1, atol=0.02)
    # the same pixels as JSON give the same answer
    status, body, _ = post_json(server.url + "/v2/models/shapes/infer",
                                {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "UINT8", "data": x.ravel().tolist()}]})
    assert np.allclose(probs, np.reshape(body["outputs"][0]["data"], (3, 3)), atol=1e-6)


def test_tritonclient_classification_extension(triton, heldout_dir, server):
    httpclient, client = triton
    out_name = client.get_model_metadata("shapes")["outputs"][0]["name"]
    inp = httpclient.InferInput("image", [3], "BYTES")
    images = _images(heldout_dir)
    inp.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    labels = np.array(["circle", "square", "triangle"])
    expected = np.argmax(_reference(server, images), 1)
    for binary_out in (True, False):
        out = httpclient.InferRequestedOutput(out_name, binary_data=binary_out, class_count=2)
        res = client.infer("shapes", [inp], outputs=[out])
        top = res.as_numpy(out_name)
        assert top.shape == (3, 2), binary_out
        best = [(v.decode() if isinstance(v, bytes) else v).split(":") for v in top[:, 0]]
        assert [label for _, _, label in best] == list(labels[expected]), binary_out
        assert [int(i) for _, i, _ in best] == list(expected) and all(0 <= float(s) <= 1 for s, _, _ in best)


# --------------------------------------------------------------------------- kserve

# Checked before any fixture: a skip must not first train the test model.
@pytest.mark.skipif(not os.environ.get("EDGEPORT_KSERVE_PYTHON"),
                    reason="kserve needs its own venv (it downgrades protobuf): scripts/test.sh makes one, or set EDGEPORT_KSERVE_PYTHON "
                           "to a python with `pip install kserve`; tests/test_server_tfserving.py checks its v1 client's exchange")
def test_kserve_rest_client_v1_and_v2(server, heldout_dir):
    """kserve's InferenceRESTClient, v1 (is_model_ready, predict) and v2 (health, infer with JSON and
    binary inputs and outputs). kserve is not in [dev]: it would replace the protobuf 7 that TensorFlow,
    ONNX and LiteRT use in .venv with protobuf 6, so it runs from a Python of its own."""
    script = Path(__file__).with_name("kserve_client_check.py")
    r = subprocess.run([os.environ["EDGEPORT_KSERVE_PYTHON"], str(script), server.url, str(heldout_dir)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
