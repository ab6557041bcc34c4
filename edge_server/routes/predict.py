"""`POST /predict`: raw image bytes or a multipart field `image`; `?top_k=`."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..app import state
from ..errors import ApiError
from .common import record

bp = Blueprint("predict", __name__)

# Content types a raw body may carry. The image's real format is read from its
# bytes (and checked against imageio.ALLOWED_FORMATS), so these only turn away
# bodies that say they are something else. x-www-form-urlencoded is what
# `curl --data-binary @photo.jpg` sends when no -H is given.
RAW_TYPES = {"image/jpeg", "image/jpg", "image/png", "image/webp", "image/bmp", "image/x-ms-bmp",
             "application/octet-stream", "application/x-www-form-urlencoded", ""}


def image_bytes_from_request() -> bytes:
    ctype = request.mimetype or ""
    if ctype == "multipart/form-data":
        f = request.files.get("image")
        if f is None:
            got = sorted(request.files) or "no file fields"
            raise ApiError(400, f"Expected a multipart file field named 'image'. Received: {got}")
        return f.read()
    if ctype not in RAW_TYPES:
        raise ApiError(415, "Expected image bytes (image/jpeg, image/png, image/webp, image/bmp or "
                            f"application/octet-stream) or multipart/form-data. Received: Content-Type {ctype}")
    return request.get_data(cache=False)


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


@bp.post("/predict")
def predict():
    top_k = parse_top_k()
    data = image_bytes_from_request()
    svc = state().model()
    predictions, timings = svc.predict_bytes(data, top_k)
    record(timings)
    return jsonify({"model": svc.name, "version": svc.version, "predictions": predictions, "timings_ms": timings})
