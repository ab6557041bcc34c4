"""Open Inference Protocol (KServe v2) over HTTP/REST, as its published spec says.

Health (`/v2/health/live|ready`), server metadata (`GET /v2`), model metadata
(`GET /v2/models/{name}[/versions/{v}]`), model ready and infer. Errors are
`{"error": "..."}` with a 4xx status, as the spec's error response.

Infer takes one input (the model has one): a UINT8 or FP32 pixel tensor of
shape [N, S, S, 3] (or [S, S, 3]), or a BYTES tensor of shape [N] holding
encoded images — base64 strings in JSON, or raw bytes through the binary
tensor data extension (`Inference-Header-Content-Length`), which is what
tritonclient sends. The output is FP32 probabilities [N, classes]; asking
for it with `"parameters": {"classification": K}` gives the classification
extension's "score:index:label" strings instead. Either comes back as JSON
`data`, or as raw bytes after the JSON header when the request asks for
binary outputs (`binary_data_output`, or `binary_data` on the output).
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
from flask import Response, jsonify, request

from edge_core.service import ModelService, RequestContext

from .. import __version__
from ..errors import ApiError
from .common import b64_image, check_batch, json_body, parse_json, pixel_array
from .table import Route, versioned

# v2 datatype -> numpy dtype, for the pixel tensors infer accepts
PIXEL_DATATYPES = {"UINT8": np.uint8, "FP32": np.float32}
# numpy dtype name -> v2 datatype, for metadata
V2_NAMES = {"uint8": "UINT8", "int8": "INT8", "float32": "FP32", "float16": "FP16", "int32": "INT32", "int64": "INT64"}
PLATFORMS = {"tflite": "tensorflow_lite", "onnx": "onnxruntime_onnx"}
EXTENSIONS = ["classification", "binary_tensor_data"]
BINARY_HEADER = "Inference-Header-Content-Length"


# The spec: "A 200 status code indicates true and a 4xx status code indicates false."
# A JSON body is added (as KServe's own Python server does) for clients that read it.
def health_live(st):
    return jsonify({"live": True})


def health_ready(st):
    ok = st.service.ready
    return jsonify({"ready": ok}), (200 if ok else 400)


def server_metadata(st):
    return jsonify({"name": "edgeport", "version": __version__, "extensions": EXTENSIONS})


def model_metadata(st, name: str, version: str | None = None):
    svc = st.model(name, version)
    n = svc.size
    return jsonify({
        "name": svc.name,
        "versions": [svc.version],
        "platform": PLATFORMS.get(svc.bundle.format, svc.bundle.format),
        "inputs": [{"name": svc.input_name, "datatype": V2_NAMES.get(svc.input_dtype, svc.input_dtype.upper()), "shape": [-1, n, n, 3]}],
        "outputs": [{"name": svc.output_name, "datatype": "FP32", "shape": [-1, svc.n_classes]}],
    })


def model_ready(st, name: str, version: str | None = None):
    svc = st.model(name, version)
    return jsonify({"name": svc.name, "ready": svc.ready}), (200 if svc.ready else 400)


def _request_json(size: int, ctx: RequestContext) -> tuple[dict, bytes]:
    """The JSON request and, with the binary tensor data extension, the bytes after it."""
    header_len = request.headers.get(BINARY_HEADER)
    if header_len is None:
        return json_body(size, ctx=ctx), b""
    raw = request.get_data(cache=False)
    try:
        n = int(header_len)
        if not 0 < n <= len(raw):
            raise ValueError
    except ValueError:
        raise ApiError(400, f"Expected {BINARY_HEADER} to give the length of a JSON header within the body "
                            f"({len(raw)} bytes). Received: {header_len[:40]!r}") from None
    body = parse_json(raw[:n], size, "the inference header", ctx)
    if not isinstance(body, dict):
        raise ApiError(400, f"Expected a JSON object as the inference header. Received: a JSON {type(body).__name__}")
    return body, raw[n:]


def _shape(t: dict, where: str) -> list[int]:
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ApiError(400, f"Expected {where}.shape to be a list of non-negative integers. Received: {shape!r}")
    return shape


def _bytes_elements(t: dict, where: str, binary: bytes | None) -> list[bytes]:
    shape = _shape(t, where)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise ApiError(400, f"Expected {where}.shape [N] (N encoded images) for datatype BYTES. Received: {shape}")
    if binary is not None:  # binary extension: each element is a 4-byte little-endian length, then the bytes
        items, pos = [], 0
        while pos < len(binary):
            if pos + 4 > len(binary):
                raise ApiError(400, f"Expected {where}'s binary data as length-prefixed elements. Received: a truncated length")
            (size,) = struct.unpack_from("<I", binary, pos)
            items.append(binary[pos + 4: pos + 4 + size])
            pos += 4 + size
    else:
        data = t.get("data")
        if isinstance(data, list) and data and isinstance(data[0], list):
            data = [d for row in data for d in (row if isinstance(row, list) else [row])]
        if not isinstance(data, list):
            raise ApiError(400, f"Expected {where}.data to be a list of base64 strings. Received: {type(data).__name__}")
        items = [b64_image(v, f"{where}.data[{i}]") for i, v in enumerate(data)]
    if len(items) != shape[0]:
        raise ApiError(400, f"Expected {where}.data to hold {shape[0]} elements, as its shape {shape} says. Received: {len(items)}")
    check_batch(len(items), "image")
    return items


def _pixels(t: dict, where: str, binary: bytes | None, svc: ModelService) -> np.ndarray:
    shape = _shape(t, where)
    dtype = PIXEL_DATATYPES[t["datatype"]]
    if binary is not None:
        if len(binary) % np.dtype(dtype).itemsize:
            raise ApiError(400, f"Expected {where}'s binary data to be whole {t['datatype']} values. Received: {len(binary)} bytes")
        x = np.frombuffer(binary, dtype=dtype)  # little-endian, as the extension says; no copy
    else:
        x = pixel_array(t.get("data"), f"{where}.data", dtype)
    count = math.prod(shape)  # Python ints: np.prod would wrap around on a hostile shape
    if x.size != count:
        raise ApiError(400, f"Expected {where}.data to hold {count} values, as its shape {shape} says. Received: {x.size}")
    if len(shape) == 3:  # one image without a batch dimension
        shape = [1, *shape]
    x = svc.check_pixels(x.reshape(shape), where)
    check_batch(x.shape[0], "image")
    return x


def _parameters(obj: dict, where: str) -> dict:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ApiError(400, f"Expected {where}.parameters to be an object. Received: {type(params).__name__}")
    return params


def _input(body: dict, binary: bytes) -> tuple[dict, bytes | None]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        got = f"{len(inputs)} inputs" if isinstance(inputs, list) else type(inputs).__name__
        raise ApiError(400, f"Expected 'inputs' to be a list of one tensor object (the model has one input). Received: {got}")
    t = inputs[0]
    missing = [k for k in ("name", "shape", "datatype") if k not in t]
    if missing:
        raise ApiError(400, f"Expected inputs[0] to have name, shape and datatype. Received: no {', '.join(missing)}")
    size = _parameters(t, "inputs[0]").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != len(binary):
            raise ApiError(400, f"Expected binary_data_size to match the {len(binary)} bytes after the JSON header. Received: {size!r}")
        return t, binary
    if "data" not in t:
        raise ApiError(400, "Expected inputs[0].data (or binary_data_size with the binary extension). Received: neither")
    return t, None


def _flag(params: dict, key: str, where: str) -> bool | None:
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"Expected {where}.parameters.{key} to be true or false. Received: {value!r}")
    return value


def _outputs(body: dict, svc: ModelService) -> tuple[int | None, bool]:
    """(classification top-k or None, binary output?) as the client asked; checks requested output names.

    Binary outputs follow the binary tensor data extension: the request-level
    `binary_data_output` applies to every output, and an output's own
    `binary_data` overrides it. tritonclient sets the request-level one when
    it names no outputs, and `binary_data` on each InferRequestedOutput (its default).
    """
    binary = bool(_flag(_parameters(body, "request"), "binary_data_output", "request"))
    wanted = body.get("outputs")
    if wanted is None:
        return None, binary
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise ApiError(400, f"Expected 'outputs' to be a list of objects. Received: {type(wanted).__name__}")
    k = None
    for i, o in enumerate(wanted):
        if o.get("name") != svc.output_name:
            raise ApiError(400, f"Unknown output. Expected: {svc.output_name!r}. Received: {o.get('name')!r}")
        params = _parameters(o, f"outputs[{i}]")
        c = params.get("classification")
        if c is not None:
            if not isinstance(c, int) or isinstance(c, bool) or c < 1:
                raise ApiError(400, f"Expected classification to be a positive integer. Received: {c!r}")
            k = min(c, svc.n_classes)
        own = _flag(params, "binary_data", f"outputs[{i}]")
        if own is not None:
            binary = own
    return k, binary


def _binary_bytes(out: dict) -> bytes:
    """An output tensor's data as the extension lays it out: little-endian, row major;
    a BYTES element is a 4-byte little-endian length and then its bytes."""
    if out["datatype"] == "BYTES":
        parts = [s.encode() for s in out.pop("data")]
        return b"".join(struct.pack("<I", len(b)) + b for b in parts)
    return np.asarray(out.pop("data"), dtype="<f4").tobytes()


def _respond(resp: dict, binary_outputs: list[bytes]):
    if not binary_outputs:
        return jsonify(resp)
    # The JSON header, then each binary output's bytes in the order of "outputs";
    # Inference-Header-Content-Length says where the header ends.
    header = json.dumps(resp, separators=(",", ":")).encode()
    return Response(header + b"".join(binary_outputs), content_type="application/octet-stream",
                    headers={BINARY_HEADER: str(len(header))})


def infer(st, name: str, version: str | None = None):
    svc = st.model(name, version)
    ctx = st.request()
    body, binary = _request_json(svc.size, ctx)
    t, tbinary = _input(body, binary)
    top_k, binary_out = _outputs(body, svc)
    datatype = t["datatype"]
    if "id" in body and not isinstance(body["id"], str):  # echoed back; the spec says a string
        raise ApiError(400, f"Expected id to be a string. Received: {type(body['id']).__name__}")
    if not isinstance(datatype, str):  # a list or object would not even hash for the lookup below
        raise ApiError(400, f"Expected inputs[0].datatype to be a string. Received: {type(datatype).__name__}")
    if datatype == "BYTES":
        probs, _ = svc.probabilities_for_images(_bytes_elements(t, "inputs[0]", tbinary), ctx)
    elif datatype in PIXEL_DATATYPES:
        probs, _ = svc.probabilities_for_pixels(_pixels(t, "inputs[0]", tbinary, svc), ctx)
    else:
        raise ApiError(400, f"Expected inputs[0].datatype UINT8 or FP32 (pixels) or BYTES (encoded images). Received: {datatype!r}")
    if top_k is None:
        # JSON gets 6 decimals (enough for a probability, and a shorter body); binary gets the float32 values as they are.
        data = probs.ravel() if binary_out else np.round(probs.ravel().astype(np.float64), 6).tolist()
        out = {"name": svc.output_name, "shape": list(probs.shape), "datatype": "FP32", "data": data}
    else:
        ranked = [svc.rank(p, top_k) for p in probs]
        out = {"name": svc.output_name, "shape": [len(probs), top_k], "datatype": "BYTES",
               "data": [f"{r['score']:.6f}:{r['index']}:{r['label']}" for row in ranked for r in row]}
    binary_outputs = []
    if binary_out:
        binary_outputs.append(_binary_bytes(out))
        out["parameters"] = {"binary_data_size": len(binary_outputs[-1])}
    resp = {"model_name": svc.name, "model_version": svc.version}
    if "id" in body:
        resp["id"] = body["id"]
    resp["outputs"] = [out]
    return _respond(resp, binary_outputs)


ROUTES = (
    Route("/v2/health/live", health_live),
    Route("/v2/health/ready", health_ready),
    Route("/v2", server_metadata),
    *versioned("/v2/models/<name>{v}", model_metadata),
    *versioned("/v2/models/<name>{v}/ready", model_ready),
    *versioned("/v2/models/<name>{v}/infer", infer, ("POST",)),
)
