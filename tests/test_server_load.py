"""Many parallel requests on every predict protocol: all answered, all correct, none 5xx."""

import re
import threading
from concurrent.futures import ThreadPoolExecutor

from conftest import http
from server_helpers import b64, first_image, post_json


def test_200_parallel_requests_from_8_threads(server, heldout_dir):
    images = [first_image(heldout_dir, label, i) for label in ("circle", "square", "triangle") for i in range(4)]
    data = {p: p.read_bytes() for p in images}
    # What each image is, asked one at a time first.
    expected = {p: http("POST", server.url + "/predict?top_k=1", d, {"Content-Type": "image/jpeg"})[1]["predictions"][0]["index"]
                for p, d in data.items()}

    def one(i: int):
        p = images[i % len(images)]
        kind = i % 3
        if kind == 0:
            status, body, _ = http("POST", server.url + "/predict?top_k=1", data[p], {"Content-Type": "image/jpeg"})
            got = body["predictions"][0]["index"] if status == 200 else None
        elif kind == 1:
            status, body, _ = post_json(server.url + "/v1/models/shapes:predict", {"instances": [{"b64": b64(data[p])}]})
            got = max(range(3), key=lambda j: body["predictions"][0][j]) if status == 200 else None
        else:
            status, body, _ = post_json(server.url + "/v2/models/shapes/infer",
                                        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(data[p])]}]})
            got = max(range(3), key=lambda j: body["outputs"][0]["data"][j]) if status == 200 else None
        return status, got == expected[p], threading.get_ident()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200)))
    assert all(s == 200 for s, _, _ in results), [s for s, _, _ in results if s != 200]
    assert all(ok for _, ok, _ in results)
    text = http("GET", server.url + "/metrics")[1]
    assert 'edgeport_http_requests_total{endpoint="/predict",method="POST",status="200"}' in text
    # No request answered 5xx (other families carry a status label too: budget refusals by 413/503).
    assert not re.search(r'edgeport_http_requests_total\{[^}]*status="5', text), text
