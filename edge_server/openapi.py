"""The OpenAPI 3.1 document for every HTTP endpoint, as data.

`openapi_document(svc)` fills in the live model's name, version, labels and
input size, so a client generator (or schemathesis, tests/test_openapi.py)
sees the real values: path parameters list the one model this server has
(any other name is a documented 404), and /predict's labels are an enum.

Every 4xx is the same JSON error object, `{"error": "... Expected ... Received: ..."}`;
a few carry extra keys (a failed reload says what is still serving).
"""

from __future__ import annotations

from edge_core.imageio import ALLOWED_FORMATS

from . import __version__
from .routes.predict import DOCUMENTED_RAW_TYPES
from .routes.table import PUBLIC_PATHS

JSON = "application/json"
BINARY = {"type": "string", "format": "binary"}



def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


ERROR_REASONS = {
    400: "The request is malformed: the message says what was expected and what arrived.",
    401: "The server has an API key and the request carried none, or a wrong one.",
    404: "Unknown model name or version.",
    413: "The body is larger than the server's limit, the image has more pixels than allowed, or the request "
         "would need more memory than the server's budget holds.",
    415: "The Content-Type, or the image format, is not one this endpoint takes.",
    422: "Understood, but could not be done.",
    503: "Busy: other requests hold the memory this one needs, or it ran past the server's deadline. Retry after "
         "the seconds in Retry-After.",
}


def _errors(*codes: int, **reasons: str) -> dict:
    return {str(c): _json(_ref("Error"), reasons.get(f"e{c}", ERROR_REASONS[c])) for c in codes}


def _schemas(svc) -> dict:
    n, labels = svc.size, list(svc.labels)
    number_list = {"type": "array", "items": {"type": "number"}}
    tensor_meta = {
        "type": "object", "required": ["name", "datatype", "shape"],
        "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                       "shape": {"type": "array", "items": {"type": "integer"}}},
    }
    tf_tensor_info = {
        "type": "object", "required": ["dtype", "tensor_shape", "name"],
        "properties": {
            "dtype": {"type": "string"}, "name": {"type": "string"},
            "tensor_shape": {"type": "object", "properties": {
                "dim": {"type": "array", "items": {"type": "object", "properties": {"size": {"type": "string"}, "name": {"type": "string"}}}},
                "unknown_rank": {"type": "boolean"}}},
        },
    }
    # A v2 tensor's data: numbers (flat, or nested by the shape) or base64 strings.
    tensor_element = {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "array", "items": {}}]}
    b64 = {"type": "object", "required": ["b64"], "properties": {"b64": {"type": "string", "contentEncoding": "base64"}}}
    # An instance: a b64 image, an (S, S, 3) pixel array, or either under a single input name.
    pixels = {"type": "array", "description": f"{n}x{n}x3 RGB pixel values 0-255",
              "items": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}
    instance = {"oneOf": [b64, pixels, {"type": "object", "minProperties": 1, "maxProperties": 1,
                                         "not": {"required": ["b64"]}, "additionalProperties": {"oneOf": [b64, pixels]}}]}
    return {
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "string", "description": "What was expected and what was received."}},
        },
        "Prediction": {
            "type": "object", "required": ["label", "index", "score"],
            "properties": {"label": {"type": "string", "enum": labels},
                           "index": {"type": "integer", "minimum": 0, "maximum": len(labels) - 1},
                           "score": {"type": "number", "minimum": 0, "maximum": 1}},
        },
        "PredictResponse": {
            "type": "object", "required": ["model", "version", "predictions", "timings_ms"],
            "properties": {
                "model": {"type": "string"}, "version": {"type": "string"},
                "predictions": {"type": "array", "items": _ref("Prediction"), "description": "Highest score first."},
                "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}},
            },
        },
        "ModelDescription": {
            "type": "object", "required": ["name", "version", "labels", "input", "output"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "labels": {"type": "array", "items": {"type": "string"}},
                           "input": {"type": "object"}, "output": {"type": "object"},
                           "decode": {"type": "object", "description": "How images are decoded (exact or fast) and why",
                                      "properties": {"mode": {"type": "string", "enum": ["exact", "fast"]}, "why": {"type": "string"}}},
                           "precision_choice": {
                               "type": "object", "description": "Which precision of the bundle is served and why: the fastest "
                                                               "timed at start (timings_ms), or pinned by a flag or device profile",
                               "properties": {"precision": {"type": "string"}, "reason": {"type": "string"},
                                              "timings_ms": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
                                              "available": {"type": "array", "items": {"type": "string"}}}}},
        },
        "TFStatus": {
            "type": "object", "required": ["name", "ready", "model_version_status"],
            "description": "TF Serving's model_version_status, with KServe v1's name and ready beside it.",
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}, "model_version_status": {"type": "array", "items": {
                "type": "object", "required": ["version", "state", "status"],
                "properties": {"version": {"type": "string"}, "state": {"type": "string", "enum": ["AVAILABLE", "LOADING"]},
                               "status": {"type": "object"}}}}},
        },
        "TFMetadata": {
            "type": "object", "required": ["model_spec", "metadata"],
            "properties": {
                "model_spec": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"}}},
                "metadata": {"type": "object", "properties": {"signature_def": {"type": "object", "properties": {
                    "signature_def": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                        "inputs": {"type": "object", "additionalProperties": tf_tensor_info},
                        "outputs": {"type": "object", "additionalProperties": tf_tensor_info},
                        "method_name": {"type": "string"}}}}}}}},
            },
        },
        "TFPredictRequest": {
            "type": "object",
            "description": "Exactly one of `instances` (row format) or `inputs` (columnar format).",
            "properties": {
                "signature_name": {"type": "string", "enum": ["serving_default", ""]},
                "instances": {"type": "array", "minItems": 1, "maxItems": 32, "items": instance},
                "inputs": {"oneOf": [{"type": "array", "items": instance}, b64, {"type": "object"}]},
            },
        },
        "TFPredictResponse": {
            "oneOf": [
                {"type": "object", "required": ["predictions"], "properties": {"predictions": {"type": "array", "items": number_list}}},
                {"type": "object", "required": ["outputs"], "properties": {"outputs": {"type": "array", "items": number_list}}},
            ],
        },
        "V2ServerMetadata": {
            "type": "object", "required": ["name", "version", "extensions"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "extensions": {"type": "array", "items": {"type": "string"}}},
        },
        "V2ModelMetadata": {
            "type": "object", "required": ["name", "platform", "inputs", "outputs"],
            "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                           "platform": {"type": "string"},
                           "inputs": {"type": "array", "items": tensor_meta}, "outputs": {"type": "array", "items": tensor_meta}},
        },
        "V2Ready": {"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
        "V2InferRequest": {
            "type": "object", "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object", "properties": {"binary_data_output": {
                    "type": "boolean", "description": "Binary tensor data extension: every output as raw bytes after the JSON."}}},
                "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                    "type": "object", "required": ["name", "shape", "datatype"],
                    "properties": {
                        "name": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "datatype": {"type": "string", "enum": ["UINT8", "FP32", "BYTES"]},
                        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
                        "data": {"type": "array", "items": tensor_element,
                                 "description": f"UINT8/FP32: pixel values 0-255 for shape [N, {n}, {n}, 3] "
                                                "(flat or nested); BYTES: base64-encoded images"},
                    }}},
                "outputs": {"type": "array", "items": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string", "enum": [svc.output_name]},
                                   "parameters": {"type": "object", "properties": {
                                       "classification": {"type": "integer", "minimum": 1},
                                       "binary_data": {"type": "boolean", "description": "Binary tensor data extension: "
                                                       "this output as raw bytes after the JSON (overrides binary_data_output)."}}}}}},
            },
        },
        "V2InferResponse": {
            "type": "object", "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"}, "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": {
                    "type": "object", "required": ["name", "shape", "datatype"],
                    "description": "`data` in JSON, or `parameters.binary_data_size` bytes after the JSON header.",
                    "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                                   "datatype": {"type": "string", "enum": ["FP32", "BYTES"]},
                                   "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
                                   "data": {"type": "array", "items": {"type": ["number", "string"]}}}}},
            },
        },
        "ReloadRequest": {"type": "object", "properties": {"bundle": {"type": "string", "description": "Path on the server; default: the bundle it was started with."}}},
        "ReloadResponse": {
            "type": "object", "required": ["reloaded"],
            "properties": {"reloaded": {"type": "boolean"}, "model": {"type": "object"}, "previous": {"type": "object"},
                           "load_ms": {"type": "number"}},
        },
    }


def openapi_document(svc) -> dict:
    """The document for the model `svc` serves now (call again after a reload)."""
    name_param = {"name": "name", "in": "path", "required": True, "description": "The model's name (this server has one model).",
                  "schema": {"type": "string", "enum": [svc.name]}}
    version_param = {"name": "version", "in": "path", "required": True, "schema": {"type": "string", "enum": [svc.version]}}
    top_k = {"name": "top_k", "in": "query", "required": False, "description": "How many labels to return, highest score first.",
             "schema": {"type": "integer", "minimum": 1, "default": 5}}
    formats = ", ".join(sorted(ALLOWED_FORMATS))

    def op(op_id: str, summary: str, ok: dict, *errors: int, params=(), body=None, **reasons) -> dict:
        # operationId: what a generated client names the function (else `get`, `post_v1_models_namepredict`)
        o = {"operationId": op_id, "summary": summary, "responses": {"200": ok, **_errors(*errors, **reasons)}}
        if params:
            o["parameters"] = list(params)
        if body:
            o["requestBody"] = body
        o["responses"].update(_errors(401))  # taken off again for the public paths, at the end
        return o

    def json_body(schema: dict, required: bool = True) -> dict:
        return {"required": required, "content": {JSON: {"schema": schema}}}

    model_params = [name_param]
    versioned = [name_param, version_param]
    paths: dict[str, dict] = {}

    def both(path: str, method: str, op_id: str, make) -> None:
        """The route with and without /versions/{version}, as the server registers both."""
        paths.setdefault(path.format(v=""), {})[method] = make(op_id, model_params)
        paths.setdefault(path.format(v="/versions/{version}"), {})[method] = make(op_id + "_version", versioned)

    image_body = {
        "required": True,
        "description": f"One encoded image ({formats}): the raw bytes, or a multipart file field named `image`. "
                       "Raw bytes that start like an image are taken whatever the Content-Type says.",
        "content": {**{t: {"schema": BINARY} for t in DOCUMENTED_RAW_TYPES},
                    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {"image": BINARY}}}},
    }
    paths["/predict"] = {"post": op(
        "predict", "Classify one image", _json(_ref("PredictResponse"), "Labels with scores, highest first."), 400, 413, 415, 503,
        params=[top_k], body=image_body, e413="The body or the image's pixel count is over the server's limit.")}

    both("/v1/models/{{name}}{v}", "get", "tfserving_model_status", lambda i, p: op(
        i, "TensorFlow Serving: model status", _json(_ref("TFStatus"), "The model's version status."), 404, params=p))
    both("/v1/models/{{name}}{v}/metadata", "get", "tfserving_model_metadata", lambda i, p: op(
        i, "TensorFlow Serving: signature metadata", _json(_ref("TFMetadata"), "The serving_default signature."), 404, params=p))
    both("/v1/models/{{name}}{v}:predict", "post", "tfserving_predict", lambda i, p: op(
        i, "TensorFlow Serving: predict (row or columnar format; the body is read as JSON whatever its Content-Type)",
        _json(_ref("TFPredictResponse"), "Class probabilities in label order, one list per instance."),
        400, 404, 413, 415, 503, params=p, body=json_body(_ref("TFPredictRequest")),
        e415="A b64 value that is not a JPEG, PNG, WebP or BMP image (any Content-Type is read as JSON)."))

    paths["/v2/health/live"] = {"get": op("v2_server_live", "Open Inference Protocol: server live", _json(
        {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}}, "Live."))}
    ready = {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}}
    paths["/v2/health/ready"] = {"get": op("v2_server_ready", "Open Inference Protocol: server ready", _json(ready, "Ready."), 400,
                                           e400="Not ready yet (the body says ready: false).")}
    paths["/v2/health/ready"]["get"]["responses"]["400"] = _json(ready, "Not ready yet.")
    paths["/v2"] = {"get": op("v2_server_metadata", "Open Inference Protocol: server metadata", _json(_ref("V2ServerMetadata"), "Server metadata."))}
    both("/v2/models/{{name}}{v}", "get", "v2_model_metadata", lambda i, p: op(
        i, "Open Inference Protocol: model metadata", _json(_ref("V2ModelMetadata"), "Model metadata."), 404, params=p))

    def ready_op(op_id, p):
        o = op(op_id, "Open Inference Protocol: model ready", _json(_ref("V2Ready"), "Ready."), 404, params=p)
        o["responses"]["400"] = _json(_ref("V2Ready"), "Not ready yet (ready: false).")
        return o

    both("/v2/models/{{name}}{v}/ready", "get", "v2_model_ready", ready_op)

    binary_note = ("Binary tensor data extension: a JSON header of Inference-Header-Content-Length bytes, "
                   "then the tensor bytes (little-endian; a BYTES element is a 4-byte length, then its bytes).")

    def infer_op(op_id, p):
        body = json_body(_ref("V2InferRequest"))
        # A Media Type object has no description in OpenAPI 3.1: the note goes on the request body.
        body["description"] = "A JSON inference request. " + binary_note
        body["content"]["application/octet-stream"] = {"schema": BINARY}
        header = {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                  "description": "Binary tensor data extension: the length of the JSON header at the start of the body.",
                  "schema": {"type": "integer", "minimum": 1}}
        ok = _json(_ref("V2InferResponse"), "Probabilities, or classification strings; as JSON, or, when the request "
                                             "asked for binary outputs, " + binary_note)
        ok["content"]["application/octet-stream"] = {"schema": BINARY}
        ok["headers"] = {"Inference-Header-Content-Length": {
            "description": "With binary outputs: the length of the JSON header at the start of the body.",
            "schema": {"type": "integer", "minimum": 1}}}
        return op(op_id, "Open Inference Protocol: infer", ok, 400, 404, 413, 415, 503, params=[*p, header], body=body)

    both("/v2/models/{{name}}{v}/infer", "post", "v2_infer", infer_op)

    paths["/metrics"] = {"get": op("metrics", "Prometheus metrics", {"description": "Prometheus text exposition format 0.0.4.",
                                                          "content": {"text/plain": {"schema": {"type": "string"}}}})}
    paths["/"] = {"get": op("page", "A page to try the model in a browser", {"description": "The page.",
                                                                      "content": {"text/html": {"schema": {"type": "string"}}}})}
    paths["/favicon.ico"] = {"get": op("favicon", "No icon", {"description": "Nothing."})}
    paths["/favicon.ico"]["get"]["responses"] = {"204": {"description": "No content."}}
    paths["/model"] = {"get": op("model_details", "The served model's bundle details", _json(_ref("ModelDescription"), "Name, version, labels, input and output."))}
    paths["/openapi.json"] = {"get": op("openapi", "This document", _json({"type": "object", "required": ["openapi", "paths"]}, "OpenAPI 3.1."))}
    paths["/admin/reload"] = {"post": op(
        "admin_reload", "Reload the bundle (or load another) without dropping requests", _json(_ref("ReloadResponse"), "Swapped."),
        400, 404, 413, 422, body=json_body(_ref("ReloadRequest"), required=False),
        e404="Admin endpoints are off: the server was started without an API key.",
        e422="The new bundle failed to load or verify; the old one keeps serving.")}
    for path in PUBLIC_PATHS:  # answered without the API key: no 401, and no security requirement
        for o in paths[path].values():
            o["responses"].pop("401", None)
            o["security"] = []

    return {
        "openapi": "3.1.0",
        "info": {"title": "edgeport edge server", "version": __version__,
                 "description": f"Serves the image classifier {svc.name!r} version {svc.version} "
                                f"({len(svc.labels)} labels, {svc.size}x{svc.size} RGB input). "
                                "Every error is a JSON object with an `error` message and a 4xx status."},
        "paths": paths,
        "components": {
            "schemas": _schemas(svc),
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                                "Bearer": {"type": "http", "scheme": "bearer"}},
        },
        # Only when the server was started with --api-key-file; an empty alternative says "or none".
        "security": [{"ApiKey": []}, {"Bearer": []}, {}],
    }
