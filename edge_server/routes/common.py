"""Parsing shared by the protocol modules: JSON bodies, base64 images, pixel tensors, batch limits."""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
from flask import g, request

from ..errors import ApiError

MAX_BATCH = 32  # images per request: bounds a request's memory and its hold on a model instance


def json_body(any_content_type: bool = False) -> dict:
    """The request's JSON object. `any_content_type`: read the body as JSON whatever the
    Content-Type says, as TF Serving does (its docs' own `curl -d` sends form-urlencoded)."""
    ctype = request.mimetype or ""
    if not any_content_type and ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise ApiError(415, f"Expected Content-Type application/json. Received: {ctype}")
    raw = request.get_data(cache=False)
    if not raw:
        raise ApiError(400, "Expected a JSON object in the request body. Received: an empty body")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"Expected a JSON object in the request body. Received: malformed JSON ({e})") from None
    except RecursionError:  # "[[[[..." thousands deep: the parser gives up, which is the client's doing
        raise ApiError(400, "Expected a JSON object in the request body. Received: JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"Expected a JSON object in the request body. Received: a JSON {type(body).__name__}")
    return body


def b64_image(value, where: str) -> bytes:
    if not isinstance(value, str):
        raise ApiError(400, f"Expected {where} to be a base64 string. Received: {type(value).__name__}")
    # Lenient on padding only, as TF Serving is: clients that strip the trailing '=' still work.
    # The alphabet stays the standard one (validate=True), so a typo is a 400, not garbage bytes.
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"Expected {where} to be valid base64. Received: {value[:24]!r}{'...' if len(value) > 24 else ''}") from None


def pixel_array(value, where: str, dtype=None) -> np.ndarray:
    try:
        x = np.asarray(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as e:
        raise ApiError(400, f"Expected {where} to be a rectangular array of numbers. Received: {str(e).splitlines()[0]}") from None
    if x.dtype == object or x.dtype.kind not in "uifb":
        raise ApiError(400, f"Expected {where} to be an array of numbers. Received: elements of type {x.dtype}")
    return x


def check_batch(n: int, where: str) -> None:
    if n < 1:
        raise ApiError(400, f"Expected at least one {where}. Received: none")
    if n > MAX_BATCH:
        raise ApiError(400, f"Expected at most {MAX_BATCH} {where}s per request. Received: {n}")


def record(timings: dict) -> None:
    """Hand the stage timings to the metrics hook in app.py."""
    g.timings = timings
