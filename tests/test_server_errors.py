"""Every client mistake gets the right 4xx and a JSON body saying what was expected and what arrived."""

import pytest

from conftest import http
from server_helpers import assert_json_error, first_image, png_header_claiming
from test_server_http import multipart

JPEG = {"Content-Type": "image/jpeg"}


def test_empty_body(server):
    assert_json_error(*http("POST", server.url + "/predict", b"", JPEG), 400, "Expected image bytes", "empty body")


def test_truncated_jpeg(server, heldout_dir):
    data = first_image(heldout_dir).read_bytes()
    assert_json_error(*http("POST", server.url + "/predict", data[: len(data) // 3], JPEG), 400, "decodable", "Received")


def test_text_file(server):
    text = b"name,score\nalice,3\n" * 20
    assert_json_error(*http("POST", server.url + "/predict", text, {"Content-Type": "text/plain"}), 415, "Expected image bytes", "text/plain")
    assert_json_error(*http("POST", server.url + "/predict", text, {"Content-Type": "application/octet-stream"}), 415, "not an image")
    body, headers = multipart("image", "notes.txt", text, "text/plain")
    assert_json_error(*http("POST", server.url + "/predict", body, headers), 415, "not an image")


def test_png_claiming_40000_by_40000_is_refused_before_decoding(server):
    bomb = png_header_claiming(40000, 40000)
    assert len(bomb) < 100
    assert_json_error(*http("POST", server.url + "/predict", bomb, {"Content-Type": "image/png"}), 413,
                      "at most 16,000,000 pixels", "40000x40000")


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_formats_outside_the_allow_list(server, heldout_dir, fmt):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(first_image(heldout_dir)).save(buf, fmt)
    assert_json_error(*http("POST", server.url + "/predict", buf.getvalue(), {"Content-Type": "application/octet-stream"}),
                      415, "JPEG, PNG, WebP or BMP", fmt)


def test_other_image_formats_are_served(server, heldout_dir):
    import io

    from PIL import Image

    img = Image.open(first_image(heldout_dir, "triangle"))
    for fmt, ctype in (("PNG", "image/png"), ("WEBP", "image/webp"), ("BMP", "image/bmp")):
        buf = io.BytesIO()
        img.save(buf, fmt)
        status, body, _ = http("POST", server.url + "/predict?top_k=1", buf.getvalue(), {"Content-Type": ctype})
        assert status == 200, (fmt, body)


def test_malformed_json_and_wrong_content_type_on_json_endpoints(server):
    assert_json_error(*http("POST", server.url + "/v1/models/shapes:predict", b'{"instances": [', {"Content-Type": "application/json"}),
                      400, "malformed JSON")
    assert_json_error(*http("POST", server.url + "/v2/models/shapes/infer", b"[1, 2]", {"Content-Type": "application/json"}),
                      400, "JSON object", "list")
    assert_json_error(*http("POST", server.url + "/v2/models/shapes/infer", b"{}", {"Content-Type": "text/plain"}),
                      415, "application/json", "text/plain")


def test_unknown_model_name_everywhere(server):
    for method, path in (("GET", "/v1/models/other"), ("GET", "/v1/models/other/metadata"), ("GET", "/v2/models/other"),
                         ("GET", "/v2/models/other/ready")):
        assert_json_error(*http(method, server.url + path), 404, "Unknown model", "'other'")


def test_oversized_body_is_413_json(server):
    big = b"\xff\xd8" + b"\0" * (20 * 1024 * 1024 + 10)  # just over the default 20 MB limit
    assert_json_error(*http("POST", server.url + "/predict", big, JPEG), 413, "at most 20,971,520 bytes", "Received")


def test_admin_is_off_without_a_key(server):
    assert_json_error(*http("POST", server.url + "/admin/reload"), 404, "--api-key-file")
