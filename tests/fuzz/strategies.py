"""Hypothesis strategies for hostile input, shared by tests/test_fuzz.py and tests/fuzz/fuzz_decode.py.

Images: small valid JPEG/PNG/BMP/WebP files (several modes, an EXIF rotation)
as seeds, then mutated: truncated, bytes flipped or inserted, the size fields
in the header rewritten to lie, or a different format's magic glued on.
Requests: JSON near the TF Serving and v2 shapes (the fields a parser looks
at, with wrong types, hostile shapes and sizes) and arbitrary JSON.
"""

from __future__ import annotations

import base64
import io
import json
import struct

import numpy as np
from hypothesis import strategies as st
from PIL import Image

SIZE = 64  # the test bundle's input size


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: exercises the EXIF path
    seeds = [
        _encode(rgb, "JPEG", quality=80), _encode(rgb, "JPEG", progressive=True), _encode(rgb, "JPEG", exif=exif.tobytes()),
        _encode(rgb.convert("L"), "JPEG"), _encode(rgb.convert("CMYK"), "JPEG"),
        _encode(rgb, "PNG"), _encode(rgb.convert("RGBA"), "PNG"), _encode(rgb.convert("P"), "PNG"),
        _encode(rgb.convert("L"), "PNG"), _encode(rgb.convert("1"), "PNG"), _encode(rgb.convert("I;16"), "PNG"),
        _encode(rgb, "PNG", exif=exif.tobytes()),
        _encode(rgb, "BMP"), _encode(rgb.convert("P"), "BMP"), _encode(rgb.convert("L"), "BMP"),
        _encode(rgb, "WEBP", quality=50), _encode(rgb, "WEBP", lossless=True), _encode(rgb.convert("RGBA"), "WEBP"),
        _encode(rgb, "GIF"), _encode(rgb, "TIFF"),  # not allowed: must be a clean 415
    ]
    return seeds


SEEDS = seed_images()
MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a", b"II*\x00", b"\x00\x00\x01\x00"]
HOSTILE_INTS = st.sampled_from([0, 1, 2, 3, 63, 64, 65, 255, 256, 2**15, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 1])


@st.composite
def _lying_header(draw, data: bytes) -> bytes:
    """Rewrite the width/height fields where each format keeps them."""
    b = bytearray(data)
    w, h = draw(HOSTILE_INTS), draw(HOSTILE_INTS)
    if b.startswith(b"\x89PNG") and len(b) >= 24:
        b[16:24] = struct.pack(">II", w, h)  # IHDR (the CRC now lies too, as a forger's would not)
    elif b.startswith(b"BM") and len(b) >= 26:
        b[18:26] = struct.pack("<ii", w - 2**31 if w >= 2**31 else w, h - 2**31 if h >= 2**31 else h)
    elif b.startswith(b"\xff\xd8"):
        i = b.find(b"\xff\xc0")
        if i < 0:
            i = b.find(b"\xff\xc2")
        if 0 <= i and i + 9 <= len(b):
            b[i + 5:i + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
    elif b.startswith(b"RIFF") and len(b) >= 30:
        b[26:30] = struct.pack("<HH", w & 0x3FFF, h & 0x3FFF)
    return bytes(b)


@st.composite
def mutated_image(draw) -> bytes:
    data = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "lie", "magic", "splice"]))
        if not data:
            break
        if kind == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
        elif kind == "insert":
            i = draw(st.integers(0, len(data)))
            data = data[:i] + draw(st.binary(min_size=1, max_size=64)) + data[i:]
        elif kind == "delete":
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + data[i + draw(st.integers(1, 64)):]
        elif kind == "lie":
            data = draw(_lying_header(data))
        elif kind == "magic":
            data = draw(st.sampled_from(MAGICS)) + data[draw(st.integers(0, min(16, len(data)))):]
        else:  # another seed's tail after this one's head
            other = draw(st.sampled_from(SEEDS))
            data = data[: draw(st.integers(0, len(data)))] + other[draw(st.integers(0, len(other))):]
    return data


image_bytes = st.one_of(mutated_image(), st.binary(max_size=256), st.sampled_from(MAGICS).flatmap(
    lambda m: st.binary(max_size=128).map(lambda tail: m + tail)))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


shapes = st.one_of(
    st.lists(st.one_of(HOSTILE_INTS, st.integers(-3, 5)), max_size=5),
    st.just([1, SIZE, SIZE, 3]), st.just([SIZE, SIZE, 3]), st.just([2, SIZE, SIZE, 3]), st.just([1]), st.just([2]),
    st.just([2**32, 2**32]), st.just([2**63, 2]), json_values,
)


@st.composite
def pixel_data(draw):
    """Small arbitrary arrays, or a full-size one (a valid image's worth) with a hostile value somewhere."""
    if draw(st.booleans()):
        return draw(st.lists(st.one_of(st.integers(-300, 300), st.floats(), json_values), max_size=8))
    n = draw(st.integers(1, 2))
    x = np.full(n * SIZE * SIZE * 3, draw(st.integers(0, 255)), dtype=np.int64).tolist()
    if draw(st.booleans()):
        x[draw(st.integers(0, len(x) - 1))] = draw(st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=3), st.none()))
    if draw(st.booleans()):
        x = x[: draw(st.integers(0, len(x)))]
    return x


@st.composite
def v2_request(draw) -> dict:
    datatype = draw(st.one_of(st.sampled_from(["UINT8", "FP32", "BYTES", "INT8", "FP16", ""]), json_values))
    if datatype == "BYTES":
        data = draw(st.lists(st.one_of(image_bytes.map(b64), st.text(max_size=8), json_values), max_size=3))
    else:
        data = draw(pixel_data())
    tensor = {"name": draw(st.sampled_from(["image", ""])), "shape": draw(shapes), "datatype": datatype, "data": data}
    for key in draw(st.sets(st.sampled_from(["name", "shape", "datatype", "data"]), max_size=2)):
        tensor.pop(key)
    if draw(st.booleans()):
        tensor["parameters"] = draw(st.one_of(json_values, st.fixed_dictionaries({"binary_data_size": json_values})))
    body = {"inputs": draw(st.one_of(st.just([tensor]), st.lists(st.just(tensor), max_size=3), json_values))}
    if draw(st.booleans()):
        body["outputs"] = draw(st.one_of(json_values, st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(["probs", "x", ""])}, optional={"parameters": st.one_of(
                json_values, st.fixed_dictionaries({"classification": json_values}))}), max_size=2)))
    if draw(st.booleans()):
        body["id"] = draw(json_values)
    return body


@st.composite
def tfserving_request(draw) -> dict:
    instance = st.one_of(
        image_bytes.map(lambda d: {"b64": b64(d)}), st.fixed_dictionaries({"b64": json_values}),
        pixel_data(), json_values, st.dictionaries(st.text(max_size=5), json_values, min_size=1, max_size=2),
    )
    key = draw(st.sampled_from(["instances", "inputs", "both", "neither"]))
    body: dict = {}
    items = draw(st.one_of(st.lists(instance, max_size=3), instance, json_values))
    if key in ("instances", "both"):
        body["instances"] = items
    if key in ("inputs", "both"):
        body["inputs"] = draw(st.one_of(st.just(items), st.dictionaries(st.just("image"), st.just(items), min_size=1)))
    if draw(st.booleans()):
        body["signature_name"] = draw(st.one_of(st.just("serving_default"), json_values))
    return body


def encode_json(body) -> bytes:
    return json.dumps(body).encode()


@st.composite
def binary_extension(draw) -> tuple[bytes, dict]:
    """A v2 request with the binary tensor data extension: JSON header, then length-prefixed images or raw pixels."""
    images = draw(st.lists(image_bytes, max_size=2))
    datatype = draw(st.sampled_from(["BYTES", "UINT8", "FP32"]))
    if datatype == "BYTES":
        tail = b"".join(struct.pack("<I", len(d)) + d for d in images)
        if draw(st.booleans()):
            tail = tail[: draw(st.integers(0, len(tail)))]
    else:
        tail = draw(st.one_of(st.binary(max_size=64), st.just(bytes(SIZE * SIZE * 3)), st.just(bytes(SIZE * SIZE * 3 * 4))))
    size = draw(st.one_of(st.just(len(tail)), json_values))
    header = {"inputs": [{"name": "image", "datatype": datatype, "shape": draw(st.one_of(st.just([len(images)]), shapes)),
                          "parameters": {"binary_data_size": size}}]}
    head = encode_json(header)
    declared = draw(st.one_of(st.just(str(len(head))), st.integers(-5, len(head) + len(tail) + 5).map(str),
                                 st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=6)))
    return head + tail, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": declared}
