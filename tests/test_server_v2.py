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
