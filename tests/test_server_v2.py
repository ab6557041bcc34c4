"""Open Inference Protocol (KServe v2) over REST, shapes as in the published spec's examples."""

import json
import struct

import numpy as np
from PIL import Image

from conftest import http
from server_helpers import assert_json_error, b64, first_image, post_json

INFER = "/v2/models/shapes/infer"


def test_health_and_server_metadata(server):
    assert http("GET", server.url + "/v2/health/live")[0] == 200
    assert http("GET", server.url + "/v2/health/ready")[0] == 200
    status, body, _ = http("GET", server.url + "/v2")
    assert status == 200 and set(body) == {"name", "version", "extensions"}
    assert body["name"] == "edgeport" and isinstance(body["extensions"], list)


def test_model_metadata_and_ready(server):
    status, body, _ = http("GET", server.url + "/v2/models/shapes")
    assert status == 200
    assert body == {
        "name": "shapes", "versions": ["1"], "platform": "tensorflow_lite",
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, 64, 64, 3]}],
        "outputs": [{"name": body["outputs"][0]["name"], "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert http("GET", server.url + "/v2/models/shapes/versions/1")[1] == body
    assert http("GET", server.url + "/v2/models/shapes/ready")[0] == 200
    assert http("GET", server.url + "/v2/models/shapes/versions/1/ready")[0] == 200
    assert_json_error(*http("GET", server.url + "/v2/models/nope/ready"), 404, "Unknown model", "'nope'")
    assert_json_error(*http("GET", server.url + "/v2/models/nope"), 404, "Unknown model")


def _pixels(heldout_dir, label="square"):
    return np.asarray(Image.open(first_image(heldout_dir, label)).convert("RGB").resize((64, 64)))


def test_infer_uint8_pixels_as_in_the_spec_example(server, heldout_dir):
    x = _pixels(heldout_dir)
    request = {"id": "42", "inputs": [{"name": "image", "shape": [1, 64, 64, 3], "datatype": "UINT8", "data": x.ravel().tolist()}],
               "outputs": [{"name": http("GET", server.url + "/v2/models/shapes")[1]["outputs"][0]["name"]}]}
    status, body, _ = post_json(server.url + INFER, request)
    assert status == 200, body
    assert set(body) == {"model_name", "model_version", "id", "outputs"}
    assert body["model_name"] == "shapes" and body["model_version"] == "1" and body["id"] == "42"
    (out,) = body["outputs"]
    assert set(out) == {"name", "shape", "datatype", "data"}
    assert out["datatype"] == "FP32" and out["shape"] == [1, 3] and len(out["data"]) == 3
    assert abs(sum(out["data"]) - 1) < 0.02


def test_infer_fp32_nested_and_unbatched(server, heldout_dir):
    x = _pixels(heldout_dir).astype(np.float32)
    t = {"name": "image", "shape": [64, 64, 3], "datatype": "FP32", "data": x.tolist()}
    status, body, _ = post_json(server.url + INFER, {"inputs": [t]})
    assert status == 200, body
    assert body["outputs"][0]["shape"] == [1, 3] and "id" not in body


def test_infer_bytes_base64_and_classification(server, heldout_dir):
    images = [first_image(heldout_dir, label).read_bytes() for label in ("circle", "triangle")]
    t = {"name": "image", "shape": [2], "datatype": "BYTES", "data": [b64(d) for d in images]}
    status, body, _ = post_json(server.url + INFER, {"inputs": [t]})
    assert status == 200, body
    assert body["outputs"][0]["shape"] == [2, 3]
    out_name = body["outputs"][0]["name"]
    status, body, _ = post_json(server.url + INFER, {"inputs": [t], "outputs": [{"name": out_name, "parameters": {"classification": 2}}]})
    assert status == 200, body
    out = body["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [2, 2]
    score, index, label = out["data"][0].split(":")
    assert 0 <= float(score) <= 1 and label in ("circle", "square", "triangle") and int(index) in (0, 1, 2)


def test_infer_binary_tensor_extension(server, heldout_dir):
    data = first_image(heldout_dir, "circle").read_bytes()
    binary = struct.pack("<I", len(data)) + data
    header = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                      "parameters": {"binary_data_size": len(binary)}}]}).encode()
    status, body, _ = http("POST", server.url + INFER, header + binary,
                           {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})
    assert status == 200, body
    assert body["outputs"][0]["shape"] == [1, 3]


def test_v2_errors_are_json(server, heldout_dir):
    url = server.url + INFER
    x = _pixels(heldout_dir)
    assert_json_error(*post_json(url, b'{"inputs": ['), 400, "malformed JSON")
    assert_json_error(*post_json(url, b""), 400, "empty body")
    assert_json_error(*post_json(url, {"inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8",
                                                    "data": [0] * (32 * 32 * 3)}]}), 400, "(N, 64, 64, 3)", "[1, 32, 32, 3]")
    assert_json_error(*post_json(url, {"inputs": [{"name": "image", "shape": [1, 64, 64, 3], "datatype": "UINT8",
                                                    "data": [0] * 10}]}), 400, "12288 values", "Received: 10")
    assert_json_error(*post_json(url, {"inputs": [{"name": "image", "shape": [1, 64, 64, 3], "datatype": "INT64",
                                                    "data": x.ravel().tolist()}]}), 400, "UINT8", "Received: 'INT64'")
    assert_json_error(*post_json(url, {"inputs": [{"name": "image", "shape": [1, 64, 64, 3], "datatype": "UINT8",
                                                    "data": (x.ravel().astype(int) + 300).tolist()}]}), 400, "Expected", "Received")
    assert_json_error(*post_json(url, {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}]}),
                      415, "not an image")
    assert_json_error(*post_json(url, {"inputs": []}), 400, "one tensor")
    assert_json_error(*post_json(url, {"inputs": [{"name": "image", "datatype": "UINT8"}]}), 400, "shape")
    assert_json_error(*post_json(server.url + "/v2/models/nope/infer", {"inputs": []}), 404, "Unknown model", "'nope'")
    assert_json_error(*post_json(url, {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["x"]}],
                                       "outputs": [{"name": "nope"}]}), 400, "Unknown output")


# --- binary tensor data extension, outputs (Triton's extension_binary_data.md) ---

def _binary_response(status, raw: bytes, headers):
    """(JSON header, the bytes after it) of a binary-extension response."""
    assert status == 200, raw[:300]
    assert headers["Content-Type"] == "application/octet-stream"
    n = int(headers["Inference-Header-Content-Length"])
    assert int(headers["Content-Length"]) == len(raw)
    return json.loads(raw[:n]), raw[n:]


def _post_raw(url: str, body: dict):
    import urllib.request

    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read(), r.headers


def test_binary_outputs_request_level_and_per_output(server, heldout_dir):
    images = [first_image(heldout_dir, label).read_bytes() for label in ("circle", "triangle")]
    t = {"name": "image", "shape": [2], "datatype": "BYTES", "data": [b64(d) for d in images]}
    out_name = http("GET", server.url + "/v2/models/shapes")[1]["outputs"][0]["name"]
    as_json = post_json(server.url + INFER, {"id": "7", "inputs": [t]})[1]["outputs"][0]

    header, rest = _binary_response(*_post_raw(server.url + INFER, {"id": "7", "inputs": [t], "parameters": {"binary_data_output": True}}))
    assert header["id"] == "7" and header["model_name"] == "shapes"
    (out,) = header["outputs"]
    assert "data" not in out and out["parameters"] == {"binary_data_size": 2 * 3 * 4} == {"binary_data_size": len(rest)}
    assert out["datatype"] == "FP32" and out["shape"] == [2, 3]
    probs = np.frombuffer(rest, dtype="<f4").reshape(2, 3)
    assert np.allclose(probs, np.reshape(as_json["data"], (2, 3)), atol=1e-6)

    # an output's own binary_data wins over the request-level setting, both ways
    header, rest = _binary_response(*_post_raw(server.url + INFER, {"inputs": [t], "outputs": [
        {"name": out_name, "parameters": {"binary_data": True}}]}))
    assert len(rest) == header["outputs"][0]["parameters"]["binary_data_size"] == 24
    status, body, headers = post_json(server.url + INFER, {"inputs": [t], "parameters": {"binary_data_output": True},
                                                           "outputs": [{"name": out_name, "parameters": {"binary_data": False}}]})
    assert status == 200 and headers["Content-Type"] == "application/json" and "Inference-Header-Content-Length" not in headers
    assert body["outputs"][0]["data"] == as_json["data"]


def test_binary_classification_output_is_length_prefixed_strings(server, heldout_dir):
    t = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(first_image(heldout_dir, "square").read_bytes())]}
    out_name = http("GET", server.url + "/v2/models/shapes")[1]["outputs"][0]["name"]
    wanted = [{"name": out_name, "parameters": {"classification": 2}}]
    as_json = post_json(server.url + INFER, {"inputs": [t], "outputs": wanted})[1]["outputs"][0]["data"]
    wanted[0]["parameters"]["binary_data"] = True
    header, rest = _binary_response(*_post_raw(server.url + INFER, {"inputs": [t], "outputs": wanted}))
    assert header["outputs"][0]["datatype"] == "BYTES" and header["outputs"][0]["shape"] == [1, 2]
    items, pos = [], 0
    while pos < len(rest):  # each element: a 4-byte little-endian length, then its bytes
        (n,) = struct.unpack_from("<I", rest, pos)
        items.append(rest[pos + 4: pos + 4 + n].decode())
        pos += 4 + n
    assert items == as_json


def test_binary_output_parameters_must_be_booleans(server, heldout_dir):
    t = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(first_image(heldout_dir, "square").read_bytes())]}
    assert_json_error(*post_json(server.url + INFER, {"inputs": [t], "parameters": {"binary_data_output": "yes"}}),
                      400, "binary_data_output", "true or false", "'yes'")
    out_name = http("GET", server.url + "/v2/models/shapes")[1]["outputs"][0]["name"]
    assert_json_error(*post_json(server.url + INFER, {"inputs": [t], "outputs": [{"name": out_name, "parameters": {"binary_data": 1}}]}),
                      400, "outputs[0].parameters.binary_data", "Received: 1")


def test_only_implemented_extensions_are_advertised(server):
    # each one listed has its tests above: classification, and binary tensor data for inputs and outputs
    assert http("GET", server.url + "/v2")[1]["extensions"] == ["classification", "binary_tensor_data"]
