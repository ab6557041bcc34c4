"""Parsing shared by the protocol modules: JSON bodies, base64 images, pixel tensors, batch limits."""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
from flask import request

from edge_core.service import RequestContext

from ..budget import json_counts, json_peak
from ..errors import ApiError

MAX_BATCH = 32  # images per request: bounds a request's memory and its hold on a model instance
# Slack for everything in a JSON request that is not a pixel value: keys, names, parameters, ids.
JSON_SLACK = 1024


def json_limits(size: int) -> tuple[int, int]:
    """(containers, values) the largest valid request for a size x size model can hold: MAX_BATCH images
    as nested lists [N][S][S][3], i.e. one list per pixel and row, one value per channel."""
    return MAX_BATCH * (1 + size + size * size) + JSON_SLACK, MAX_BATCH * size * size * 3 + JSON_SLACK


def parse_json(raw: bytes, size: int | None = None, what: str = "the request body", ctx: RequestContext | None = None):
    """Bytes -> JSON, bounded before parsing: json.loads of 19 MiB of "[]," builds 6.6 M lists (735 MB).
    Brackets and commas are counted first (C speed, no objects built), refused over what a model of this
    input size can ever need (413), and the parse's peak is admitted through the request context."""
    if size is not None:
        containers, values = json_counts(raw)
        max_containers, max_values = json_limits(size)
        if containers > max_containers or values > max_values:
            raise ApiError(413, f"Expected {what} to hold at most {max_values:,} values in {max_containers:,} arrays/objects "
                                f"({MAX_BATCH} images of {size}x{size}x3). Received: up to {values:,} values in {containers:,}")
        if ctx is not None:
            ctx.admit(json_peak(raw, containers, values), f"{len(raw):,} bytes of JSON")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"Expected a JSON object in {what}. Received: malformed JSON ({e})") from None
    except RecursionError:  # "[[[[..." thousands deep: the parser gives up, which is the client's doing
        raise ApiError(400, f"Expected a JSON object in {what}. Received: JSON nested too deeply") from None
    except ValueError as e:  # Python's int-string limit: a 5,000-digit number raises a plain ValueError
        raise ApiError(400, f"Expected a JSON object in {what} with numbers of at most 4,300 digits. "
                            f"Received: {str(e).splitlines()[0][:120]}") from None


def json_body(size: int | None = None, any_content_type: bool = False, ctx: RequestContext | None = None) -> dict:
    """The request's JSON object, bounded by `size` (the model's input side) before parsing.
    `any_content_type`: read the body as JSON whatever the Content-Type says, as TF Serving
    does (its docs' own `curl -d` sends form-urlencoded)."""
    ctype = request.mimetype or ""
    if not any_content_type and ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise ApiError(415, f"Expected Content-Type application/json. Received: {ctype}")
    raw = request.get_data(cache=False)
    if not raw:
        raise ApiError(400, "Expected a JSON object in the request body. Received: an empty body")
    body = parse_json(raw, size, ctx=ctx)
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
    """JSON numbers -> an array. Parsed as they are first, then checked, then cast: np.asarray(..., uint8)
    would cast true to 1 and 100.9 to 100 without a word."""
    try:
        x = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as e:
        raise ApiError(400, f"Expected {where} to be a rectangular array of numbers. Received: {str(e).splitlines()[0]}") from None
    if x.dtype == object or x.dtype.kind not in "uif":
        got = "booleans" if x.dtype.kind == "b" else f"elements of type {x.dtype}"
        raise ApiError(400, f"Expected {where} to be an array of numbers. Received: {got}")
    if x.size and bool in set(map(type, np.asarray(value, dtype=object).ravel())):
        # [true, 5] parses as the integers [1, 5]: look at the Python types (a C-level pass, ~30 ns a value)
        raise ApiError(400, f"Expected {where} to be an array of numbers. Received: booleans among them")
    if dtype is not None and np.dtype(dtype).kind in "ui":
        if x.dtype.kind == "f":
            if not np.isfinite(x).all() or (x != np.floor(x)).any():
                bad = x[~np.isfinite(x) | (x != np.floor(x))].ravel()[0]
                raise ApiError(400, f"Expected {where} to hold whole numbers for {np.dtype(dtype).name}. Received: {float(bad)!r}")
        info = np.iinfo(dtype)
        if x.size and (x.min() < info.min or x.max() > info.max):
            raise ApiError(400, f"Expected {where} values in {info.min}-{info.max} for {np.dtype(dtype).name}. "
                                f"Received: values from {x.min()} to {x.max()}")
    try:
        return x.astype(dtype, copy=False) if dtype is not None else x
    except OverflowError as e:
        raise ApiError(400, f"Expected {where} to be numbers that fit {np.dtype(dtype).name}. Received: {e}") from None


def check_batch(n: int, where: str) -> None:
    if n < 1:
        raise ApiError(400, f"Expected at least one {where}. Received: none")
    if n > MAX_BATCH:
        raise ApiError(400, f"Expected at most {MAX_BATCH} {where}s per request. Received: {n}")

