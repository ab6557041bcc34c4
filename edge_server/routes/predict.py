"""`POST /predict`: raw image bytes or a multipart field `image`; `?top_k=`."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..app import state
from ..errors import ApiError

bp = Blueprint("predict", __name__)


def image_bytes_from_request() -> bytes:
    ctype = request.mimetype or ""
    if ctype == "multipart/form-data":
        f = request.files.get("image")
        if f is None:
            got = sorted(request.files) or "no file fields"
            raise ApiError(400, f"Expected a multipart file field named 'image'. Received: {got}")
        return f.read()
    if ctype.startswith("application/json") or ctype.startswith("text/"):
        raise ApiError(415, f"Expected image bytes (image/jpeg, image/png, ...) or multipart/form-data. Received: Content-Type {ctype}")
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
    return jsonify({"model": svc.name, "version": svc.version, "predictions": predictions, "timings_ms": timings})
