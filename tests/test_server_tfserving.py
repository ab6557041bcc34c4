"""TensorFlow Serving REST compatibility, shapes as in TF Serving's REST API document."""

import json

import numpy as np
from PIL import Image

from conftest import http
from server_helpers import assert_json_error, b64, first_image, post_json


def test_model_status_matches_tf_serving(server):
    status, body, _ = http("GET", server.url + "/v1/models/shapes")
    assert status == 200
    # TF Serving's key, and KServe v1's name and ready beside it (its client's is_model_ready reads "ready").
    assert body == {"name": "shapes", "ready": True, "model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]}
    assert http("GET", server.url + "/v1/models/shapes/versions/1")[1] == body


def test_metadata_matches_tf_serving(server):
    status, body, _ = http("GET", server.url + "/v1/models/shapes/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "shapes", "signature_name": "", "version": "1"}
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    (in_name, inp), = sig["inputs"].items()
    assert inp["dtype"] == "DT_UINT8" and inp["name"] == f"{in_name}:0"
    assert inp["tensor_shape"] == {"dim": [{"size": s, "name": ""} for s in ("-1", "64", "64", "3")], "unknown_rank": False}
    (_, out), = sig["outputs"].items()
    assert out["dtype"] == "DT_FLOAT" and [d["size"] for d in out["tensor_shape"]["dim"]] == ["-1", "3"]


def test_row_format_b64_images(server, heldout_dir):
    images = [first_image(heldout_dir, label).read_bytes() for label in ("circle", "square", "triangle")]
    status, body, _ = post_json(server.url + "/v1/models/shapes:predict",
                                {"signature_name": "serving_default", "instances": [{"b64": b64(d)} for d in images]})
    assert status == 200, body
    assert list(body) == ["predictions"]
    preds = np.array(body["predictions"])
    assert preds.shape == (3, 3) and np.allclose(preds.sum(1), 1, atol=0.02)
    # The same answer as /predict for the same image.
    _, single, _ = http("POST", server.url + "/predict?top_k=1", images[1], {"Content-Type": "image/jpeg"})
    assert int(preds[1].argmax()) == single["predictions"][0]["index"]


def test_row_format_named_input_and_versioned_url(server, heldout_dir):
    data = first_image(heldout_dir, "square").read_bytes()
    status, body, _ = post_json(server.url + "/v1/models/shapes/versions/1:predict", {"instances": [{"image": {"b64": b64(data)}}]})
    assert status == 200 and len(body["predictions"]) == 1


def test_columnar_format_pixel_arrays(server, heldout_dir):
    pixels = np.asarray(Image.open(first_image(heldout_dir, "triangle")).convert("RGB").resize((64, 64)))
    status, body, _ = post_json(server.url + "/v1/models/shapes:predict", {"inputs": [pixels.tolist()]})
    assert status == 200, body
    assert list(body) == ["outputs"] and np.array(body["outputs"]).shape == (1, 3)
    # Float pixels give the same answer as integers.
    status, body2, _ = post_json(server.url + "/v1/models/shapes:predict", {"instances": [(pixels.astype(float)).tolist()]})
    assert status == 200 and np.allclose(body2["predictions"], body["outputs"])


def test_tf_serving_errors_are_json(server):
    url = server.url + "/v1/models/shapes:predict"
    assert_json_error(*post_json(url, b"{not json"), 400, "malformed JSON")
    assert_json_error(*post_json(url, {"instances": [[[0, 0, 0]] * 3]}), 400, "shape", "(N, 64, 64, 3)", "Received: shape [1, 3, 3]")
    assert_json_error(*post_json(url, {"instances": [[["a"] * 3] * 64] * 64}), 400, "Expected", "Received")
    assert_json_error(*post_json(url, {"instances": [{"b64": "!!!notbase64"}]}), 400, "base64")
    assert_json_error(*post_json(url, {"foo": 1}), 400, "instances", "Received")
    assert_json_error(*post_json(url, {"instances": [1], "signature_name": "other"}), 400, "serving_default")
    assert_json_error(*post_json(server.url + "/v1/models/nope:predict", {"instances": []}), 404, "Unknown model", "'nope'")
    assert_json_error(*http("GET", server.url + "/v1/models/shapes/versions/9"), 404, "version", "'9'")


def test_body_is_json_whatever_the_content_type(server, heldout_dir):
    """TF Serving's own docs use `curl -d '{"instances": ...}' -X POST`: curl sends form-urlencoded,
    and TF Serving reads the body as JSON anyway."""
    body = json.dumps({"instances": [{"b64": b64(first_image(heldout_dir, "circle").read_bytes())}]}).encode()
    expected = post_json(server.url + "/v1/models/shapes:predict", body)[1]
    for ctype in ("application/x-www-form-urlencoded", "text/plain", None):
        status, got, _ = http("POST", server.url + "/v1/models/shapes:predict", body, {"Content-Type": ctype} if ctype else {})
        assert (status, got) == (200, expected), ctype
    # still JSON errors when the body is not JSON
    assert_json_error(*http("POST", server.url + "/v1/models/shapes:predict", b"instances=1",
                            {"Content-Type": "application/x-www-form-urlencoded"}), 400, "malformed JSON")


def test_base64_without_padding_is_accepted(server, heldout_dir):
    url = server.url + "/v1/models/shapes:predict"
    data = next(d for i in range(10) if len(d := first_image(heldout_dir, "triangle", i).read_bytes()) % 3)  # needs padding
    padded = b64(data)
    assert padded.endswith("=")
    expected = post_json(url, {"instances": [{"b64": padded}]})
    assert expected[0] == 200
    status, body, _ = post_json(url, {"instances": [{"b64": padded.rstrip("=")}]})
    assert (status, body) == (200, expected[1])
    # lenient on padding only: the alphabet is still checked
    assert_json_error(*post_json(url, {"instances": [{"b64": padded.rstrip("=")[:-2] + "*!"}]}), 400, "base64")


def test_kserve_v1_client_exchange(server):
    """What kserve's InferenceRESTClient(protocol v1).is_model_ready does: GET /v1/models/NAME and
    return response.json().get("ready") (a 503 would mean not ready)."""
    status, body, headers = http("GET", server.url + "/v1/models/shapes")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body.get("ready") is True and body.get("name") == "shapes"
