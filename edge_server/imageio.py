"""Image bytes -> the model's input pixels, safely.

The decoded pixels must match what the trainer saw (trainer/data.py decodes
the same way; tests/test_skew.py checks it). Untrusted bytes: the format is
checked against an allow-list, the pixel count is checked from the header
before any pixel is decoded (decompression bombs), and a truncated file is an
error, not a half-grey image.
"""

from __future__ import annotations

import io
import struct
import time

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ApiError

ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP"}
DEFAULT_MAX_PIXELS = 40_000_000  # ~ a 7700x5200 photo

# Pillow's own bomb guard warns at 89 Mpx and raises at twice that; ours is
# stricter and configurable, so turn Pillow's off to get one clear message.
Image.MAX_IMAGE_PIXELS = None


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    if not data:
        raise ApiError(400, "Expected image bytes (JPEG, PNG, WebP or BMP). Received: an empty body")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        head = data[:16]
        raise ApiError(
            415, f"Expected a JPEG, PNG, WebP or BMP image. Received: {len(data)} bytes that are not an image (starting {head!r})"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        # A format was recognised but its header is cut short or broken (Pillow's plugins raise
        # these from Image.open itself, e.g. "Truncated File Read" for a JPEG cut inside its
        # header, "could not create decoder object" for a WebP missing its last byte).
        raise ApiError(400, f"Expected a complete, decodable image. Received: {len(data)} bytes whose header fails to parse ({e})") from None
    if img.format not in ALLOWED_FORMATS:
        raise ApiError(415, f"Expected a JPEG, PNG, WebP or BMP image. Received: {img.format}")
    w, h = img.size
    if w * h > max_pixels:
        raise ApiError(413, f"Expected an image of at most {max_pixels:,} pixels. Received: {w}x{h} = {w * h:,} pixels")
    return img


EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the image upright (what ImageOps.exif_transpose does;
# the reduced-scale path needs it as a table because it resizes first and the copy has no EXIF).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}

# How the server decodes. "exact" gives the trainer's pixels. "fast" lets libjpeg decode a JPEG at
# 1/2, 1/4 or 1/8 scale in the DCT domain when the result is still at least the model's size, then
# resizes the rest of the way with the same bilinear filter: decoding and resizing a 640x480 photo
# for a 224 px model costs 0.67x as much, a 1920x1080 one 0.50x (benchmarks/bench_decode.py). Pixels
# move by 0.4-1 level on average; on the demo model none of 540 top-1 answers changed (tests/test_decode_modes.py).
DECODE_MODES = ("exact", "fast")


def reduced_scale(img: Image.Image, size: int) -> int:
    """The factor "fast" decoding divides this image by (1 = decoded in full), as Image.draft chooses it."""
    if img.format != "JPEG":
        return 1
    fits = min(img.size[0] // size, img.size[1] // size)  # 0 for an image smaller than the model's input
    return next((s for s in (8, 4, 2) if fits >= s), 1)


def to_model_input(img: Image.Image, size: int, fast: bool = False, timings: dict | None = None) -> np.ndarray:
    """Decode, EXIF-rotate, convert to RGB and resize (bilinear) to (size, size, 3) uint8.

    fast=True decodes a large JPEG at reduced scale (see DECODE_MODES).

    `timings`, if given, receives "decode" and "preprocess" in milliseconds:
    the metrics split the two because they scale differently (decode with the
    file's pixels, preprocess with the model's).
    """
    t0 = time.perf_counter()
    box = None
    try:
        if fast and reduced_scale(img, size) > 1:
            # draft() also returns the source rectangle in the reduced image: its edges round up
            # (641 px at 1/2 is 321 px), so resizing that box maps exactly the original frame.
            box = img.draft("RGB", (size, size))[1]
        img.load()
        t1 = time.perf_counter()
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        if box is not None:  # resize in the decoded frame, then turn upright: the box is in this frame
            img = img.resize((size, size), Image.BILINEAR, box=box)
        # Each of these returns a copy even when it has nothing to do: skip them when so.
        if orientation in UPRIGHT:
            img = img.transpose(UPRIGHT[orientation])
        if img.mode != "RGB":
            img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise ApiError(400, f"Expected a complete, decodable image. Received: a {img.format} that fails to decode ({e})") from None
    if timings is not None:
        t2 = time.perf_counter()
        timings["decode"] = (t1 - t0) * 1e3
        timings["preprocess"] = (t2 - t1) * 1e3
    return arr


def decode_to_array(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS, fast: bool = False,
                    timings: dict | None = None) -> np.ndarray:
    t0 = time.perf_counter()
    img = open_image(data, max_pixels)
    opened = time.perf_counter()
    arr = to_model_input(img, size, fast=fast, timings=timings)
    if timings is not None:  # reading the header is part of decoding
        timings["decode"] += (opened - t0) * 1e3
    return arr
