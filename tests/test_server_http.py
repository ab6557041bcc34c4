"""The edge server over real HTTP: a real `edgeport serve` process on 127.0.0.1."""

import uuid

from conftest import http


def multipart(field: str, filename: str, data: bytes, ctype: str = "image/jpeg"):
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
        f"Content-Type: {ctype}\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_predict_raw_body(server, heldout_dir):
    image = sorted((heldout_dir / "square").glob("*.jpg"))[0].read_bytes()
    status, body, _ = http("POST", server.url + "/predict?top_k=2", image, {"Content-Type": "image/jpeg"})
    assert status == 200, body
    assert body["model"] == "shapes" and body["version"] == "1"
    assert len(body["predictions"]) == 2
    assert body["predictions"][0]["score"] >= body["predictions"][1]["score"]
    assert set(body["predictions"][0]) == {"label", "index", "score"}
    assert {"decode", "inference", "total"} <= set(body["timings_ms"])


def test_predict_multipart_is_mostly_right(server, heldout_dir):
    right = total = 0
    for label in ("circle", "square", "triangle"):
        for f in sorted((heldout_dir / label).glob("*.jpg"))[:10]:
            body, headers = multipart("image", f.name, f.read_bytes())
            status, answer, _ = http("POST", server.url + "/predict", body, headers)
            assert status == 200, answer
            right += answer["predictions"][0]["label"] == label
            total += 1
    assert right / total >= 0.6


def test_non_image_body_is_a_json_4xx(server):
    status, body, headers = http("POST", server.url + "/predict", b"this is not an image", {"Content-Type": "application/octet-stream"})
    assert status == 415 and headers["Content-Type"].startswith("application/json")
    assert "Expected" in body["error"] and "Received" in body["error"]


def test_empty_body_and_wrong_field_and_bad_top_k(server, heldout_dir):
    status, body, _ = http("POST", server.url + "/predict", b"", {"Content-Type": "image/jpeg"})
    assert status == 400 and "empty" in body["error"]
    payload, headers = multipart("file", "x.jpg", b"abc")
    status, body, _ = http("POST", server.url + "/predict", payload, headers)
    assert status == 400 and "'image'" in body["error"]
    image = sorted((heldout_dir / "circle").glob("*.jpg"))[0].read_bytes()
    status, body, _ = http("POST", server.url + "/predict?top_k=zero", image, {"Content-Type": "image/jpeg"})
    assert status == 400 and "top_k" in body["error"]


def test_truncated_jpeg_is_a_400(server, heldout_dir):
    image = sorted((heldout_dir / "circle").glob("*.jpg"))[0].read_bytes()
    status, body, _ = http("POST", server.url + "/predict", image[: len(image) // 2], {"Content-Type": "image/jpeg"})
    assert status == 400 and "decod" in body["error"]


def test_unknown_route_and_method_are_json(server):
    status, body, _ = http("GET", server.url + "/nope")
    assert status == 404 and "error" in body
    status, body, _ = http("GET", server.url + "/predict")
    assert status == 405 and "POST" in body["error"]


def test_health(server):
    assert http("GET", server.url + "/v2/health/live")[:2] == (200, {"live": True})
    assert http("GET", server.url + "/v2/health/ready")[:2] == (200, {"ready": True})
