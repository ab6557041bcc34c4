"""TensorFlow Serving REST API compatibility (the `/v1/models/...` endpoints).

Shapes follow TF Serving's REST API document: the row format (`instances`)
answers `{"predictions": [...]}`, the columnar format (`inputs`) answers
`{"outputs": [...]}`; binary values travel as `{"b64": "..."}` and are image
files here; errors are `{"error": "..."}`. The model has one output, so,
as in TF Serving, its name is omitted and each prediction is the list of
class probabilities in label order.
"""

from __future__ import annotations

import numpy as np
from flask import jsonify

from edge_core.service import ModelService

from ..errors import ApiError
from .common import b64_image, check_batch, json_body, pixel_array
from .table import versioned

SIGNATURE = "serving_default"
# numpy dtype name -> TensorFlow DataType enum name, as TF Serving prints it
TF_DTYPES = {"uint8": "DT_UINT8", "int8": "DT_INT8", "float32": "DT_FLOAT", "float16": "DT_HALF", "int32": "DT_INT32"}


def _tensor_info(name: str, dtype: str, shape: list) -> dict:
    # proto3 JSON: int64 sizes are strings
    dims = [{"size": str(d if d and d > 0 else -1), "name": ""} for d in shape]
    return {"dtype": TF_DTYPES.get(dtype, "DT_INVALID"), "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": f"{name}:0"}


def status(st, name: str, version: str | None = None):
    svc = st.model(name, version)
    state_name = "AVAILABLE" if svc.ready else "LOADING"
    # name and ready beside TF Serving's own key: KServe's v1 protocol reads them (its client's
    # is_model_ready), and TF Serving clients ignore keys they do not know.
    return jsonify({"name": svc.name, "ready": svc.ready, "model_version_status": [
        {"version": svc.version, "state": state_name, "status": {"error_code": "OK", "error_message": ""}}
    ]})


def metadata(st, name: str, version: str | None = None):
    svc = st.model(name, version)
    n = svc.size
    sig = {
        "inputs": {svc.input_name: _tensor_info(svc.input_name, svc.input_dtype, [-1, n, n, 3])},
        "outputs": {svc.output_name: _tensor_info(svc.output_name, "float32", [-1, svc.n_classes])},
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    return jsonify({
        "model_spec": {"name": svc.name, "signature_name": "", "version": svc.version},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: sig}}},
    })


def _unwrap_named(value, where: str):
    """`{"image": X}` -> X. The model has one input, so any single name is taken as it."""
    if isinstance(value, dict) and "b64" not in value:
        if len(value) != 1:
            raise ApiError(400, f"Expected {where} to name one input (the model has one). Received: names {sorted(value)}")
        return next(iter(value.values()))
    return value


def _batch(items: list, where: str, svc: ModelService):
    """A list of instances -> ("images", [bytes]) or ("pixels", (N, S, S, 3) array)."""
    check_batch(len(items), "instance")
    items = [_unwrap_named(v, f"{where}[{i}]") for i, v in enumerate(items)]
    for i, v in enumerate(items):
        if isinstance(v, dict) and "b64" not in v:  # e.g. {"image": {}}: a name around neither an image nor pixels
            raise ApiError(400, f'Expected {where}[{i}] to be {{"b64": ...}} or a pixel array. Received: an object with keys {sorted(v)}')
    is_b64 = [isinstance(v, dict) for v in items]
    if all(is_b64):
        return "images", [b64_image(v["b64"], f"{where}[{i}].b64") for i, v in enumerate(items)]
    if any(is_b64):
        raise ApiError(400, f"Expected {where} to be all {{\"b64\": ...}} images or all pixel arrays. Received: a mix")
    return "pixels", svc.check_pixels(pixel_array(items, where), where)


def predict(st, name: str, version: str | None = None):
    svc = st.model(name, version)
    ctx = st.request()
    body = json_body(svc.size, any_content_type=True, ctx=ctx)
    sig = body.get("signature_name", SIGNATURE)
    if sig not in (SIGNATURE, ""):
        raise ApiError(400, f"Expected signature_name {SIGNATURE!r}. Received: {sig!r}")
    if ("instances" in body) == ("inputs" in body):
        raise ApiError(400, "Expected exactly one of 'instances' (row format) or 'inputs' (columnar format). "
                            f"Received: keys {sorted(body)}")
    if "instances" in body:
        key, out_key, items = "instances", "predictions", body["instances"]
    else:
        key, out_key, items = "inputs", "outputs", _unwrap_named(body["inputs"], "inputs")
        if isinstance(items, dict):  # one b64 image, not a batch
            items = [items]
    if not isinstance(items, list):
        raise ApiError(400, f"Expected {key} to be a list. Received: {type(items).__name__}")
    kind, batch = _batch(items, key, svc)
    probs, _ = svc.probabilities_for_images(batch, ctx) if kind == "images" else svc.probabilities_for_pixels(batch, ctx)
    return jsonify({out_key: np.round(probs.astype(np.float64), 6).tolist()})


ROUTES = (
    *versioned("/v1/models/<name>{v}", status),
    *versioned("/v1/models/<name>{v}/metadata", metadata),
    *versioned("/v1/models/<name>{v}:predict", predict, ("POST",)),
)
