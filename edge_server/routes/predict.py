"""`POST /predict`: raw image bytes or a multipart field `image`; `?top_k=`.

A raw body is taken by its bytes: under any Content-Type, bytes that start like an image are one.
"""

from __future__ import annotations

from flask import jsonify, request

from edge_core.imageio import sniff_image

from ..errors import ApiError
from .table import Route

# Content type a raw body may carry -> whether the API documents it (the OpenAPI document and the 415
# message list those). The image's real format is read from its bytes (and checked against
# imageio.ALLOWED_FORMATS). Accepted but not documented: aliases some clients send, and
# x-www-form-urlencoded, which is what `curl --data-binary @photo.jpg` sends when no -H is given.
# Under any other type a body is still taken when its bytes start like an image (imageio.sniff_image):
# HTTPie sends stdin as application/json. Any other body under another type (JSON, text) is a 415.
RAW_TYPES = {
    "image/jpeg": True, "image/png": True, "image/webp": True, "image/bmp": True, "application/octet-stream": True,
    "image/jpg": False, "image/x-ms-bmp": False, "application/x-www-form-urlencoded": False, "": False,
}
DOCUMENTED_RAW_TYPES = [t for t, documented in RAW_TYPES.items() if documented]


def image_bytes_from_request() -> bytes:
    ctype = request.mimetype or ""
    if ctype == "multipart/form-data":
        f = request.files.get("image")
        if f is None:
            got = sorted(request.files) or "no file fields"
            raise ApiError(400, f"Expected a multipart file field named 'image'. Received: {got}")
        return f.read()
    data = request.get_data(cache=False)
    if ctype not in RAW_TYPES and sniff_image(data) is None:
        listed = f"{', '.join(DOCUMENTED_RAW_TYPES[:-1])} or {DOCUMENTED_RAW_TYPES[-1]}"
        raise ApiError(415, f"Expected image bytes ({listed}) or multipart/form-data. Received: Content-Type {ctype}")
    return data


def parse_top_k(default: int = 5) -> int | None:
    raw = request.args.get("top_k")
    if raw is None:
        return default
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if k < 1:
        raise ApiError(400, f"Expected top_k to be a positive integer. Received: top_k={raw!r}")
    return k


def predict(st):
    top_k = parse_top_k()
    data = image_bytes_from_request()
    svc = st.model()
    predictions, timings = svc.predict_bytes(data, top_k, st.request())
    return jsonify({"model": svc.name, "version": svc.version, "predictions": predictions, "timings_ms": timings})


ROUTES = (
    Route("/predict", predict, ("POST",)),
)
