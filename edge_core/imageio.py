"""Image bytes -> the model's input pixels, safely.

The one decoder of the project: trainer/data.py calls it too, so a file
means the same pixels in training and serving (tests/test_skew.py). Untrusted
bytes: the format is checked against an allow-list, the pixel count is
checked from the header before any pixel is decoded (decompression bombs), a
progressive JPEG's scans are counted before decoding (CPU bombs), decoding
stops at a deadline, and a truncated file is an error, not a half-grey image.

The pixel limit is on the pixels decoded: a JPEG larger than the model needs is
decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (libjpeg), so a camera photo
is held at a fraction of its header's size; other formats decode in full and are
held to the limit at their header's size.
"""

from __future__ import annotations

import io
import struct
import time

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .errors import BadImage, DeadlineExceeded, ImageTooLarge, RequestError, UnsupportedImage

# Pillow names a phone's JPEG that carries a second picture (depth map, preview) "MPO"; the first
# picture is an ordinary JPEG and decodes as one, so it is accepted as JPEG (the trainer always did).
JPEG_FORMATS = {"JPEG", "MPO"}
ALLOWED_FORMATS = {*JPEG_FORMATS, "PNG", "WEBP", "BMP"}
# 16 Mpx: a 4608x3456 (16 Mpx) camera frame or any 12 Mpx phone photo passes. Decoding one peaks at
# ~66 MiB for RGB, ~126 MiB for an RGBA or LA PNG (the frame plus its RGB copy), ~248 MiB for a WebP
# (measured, docs/serving.md), so a few at once fit the 600 MiB that a 1 GB Raspberry Pi 4's unit
# allows the service. The old 40 Mpx let one
# 34-byte lossless WebP claiming 6000x6000 cost 414 MB, and 16 clients get the server OOM-killed.
DEFAULT_MAX_PIXELS = 16_000_000
# A progressive JPEG needs ~10 scans (libjpeg's default script has 10, mozjpeg's ~12, an MPO two
# pictures' worth plus thumbnails); every extra scan makes libjpeg pass over the whole coefficient
# buffer again: 5,000 copies of one scan in a 622 kB file cost 17-31 s of CPU. Counting SOS
# markers is exact (entropy-coded data stuffs every 0xFF byte, so FF DA appears only as a
# marker) and costs ~2.7 ms per MB of file, stopping at the limit.
MAX_JPEG_SCANS = 100
# Bytes Pillow hands the decoder at a time; between chunks the deadline is checked. 16 KB instead of
# Pillow's 64 KB: a slow decode is stopped sooner, at ~200 more Python calls for a 3 MB photo.
DECODE_CHUNK = 16 * 1024

# The leading bytes of each format, (offset, bytes) pairs that must all match: how a body is known to be
# an image whatever Content-Type its client set (HTTPie labels stdin application/json). GIF is there
# so that a GIF is refused by name (415 "Received: GIF") rather than as an unexpected Content-Type.
MAGIC = {
    "JPEG": ((0, b"\xff\xd8\xff"),),
    "PNG": ((0, b"\x89PNG\r\n\x1a\n"),),
    "WEBP": ((0, b"RIFF"), (8, b"WEBP")),
    "BMP": ((0, b"BM"),),
    "GIF": ((0, b"GIF8"),),
}


def sniff_image(data: bytes) -> str | None:
    """The image format these bytes start like, or None: a cheap look at the first 12 bytes, no decoding."""
    return next((fmt for fmt, marks in MAGIC.items() if all(data[o:o + len(m)] == m for o, m in marks)), None)


# Metadata Pillow reads and keeps while it reads a header, before the request's decode is admitted: a
# JPEG's APPn and COM segments (Pillow keeps every segment, plus the ICC profile's pieces sliced and
# joined: ~3x their bytes at the peak; an 8 MiB ICC profile cost 24 MiB before admission), a PNG's
# ancillary chunks (text, iCCP, eXIf), a WebP's ICCP, EXIF and XMP chunks. Counted from the raw bytes
# before Pillow opens the file, refused (413, naming the segment) over the bound, and reserved with the
# decode (Pillow holds them until the image is closed). 2 MiB holds a camera's EXIF (64 kB at most),
# common ICC profiles (sRGB 3 kB, a printer's ~0.6 MB) and XMP; a phone's depth map in extended XMP
# may not fit.
MAX_METADATA = 2 << 20
MAX_METADATA_SEGMENTS = 1000  # a photo has ~10; each one is a Python call in Pillow's header reader
METADATA_COPIES = 3
# Pillow inflates a PNG's zTXt, iTXt and iCCP chunks while reading the header, each to at most
# MAX_TEXT_CHUNK, the text to at most MAX_TEXT_MEMORY in all (Pillow's defaults: 1 MiB and 64 MiB; a
# 66 kB file of 63 zTXt chunks cost 61 MiB before admission). 2 MiB of text: XMP and a few captions.
PNG_TEXT_CHUNK = 1 << 20
PNG_TEXT_MEMORY = 2 << 20
PNG_COMPRESSED_CHUNKS = {"zTXt", "iTXt", "iCCP"}


def _jpeg_metadata(data: bytes):
    """(name, bytes) of each APPn and COM segment before the first scan, named by marker and identifier."""
    pos, n = 2, len(data)
    while pos + 4 <= n and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        if marker in (0xDA, 0xD9):  # the first scan (or the end): Pillow's header reader stops here
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            ident = data[pos + 4:pos + 4 + 40].split(b"\0", 1)[0].decode("latin-1")
            ident = ident if ident.isascii() and ident.isprintable() else ""
            yield (f"APP{marker - 0xE0}" if marker != 0xFE else "COM") + (f" {ident}" if ident else ""), length + 2
        pos += 2 + length


def _png_metadata(data: bytes):
    """(name, bytes) of each chunk Pillow keeps or inflates: all but the image data, header, palette and
    an animation's frame controls."""
    pos, n = 8, len(data)
    while pos + 8 <= n:
        length, kind = struct.unpack_from(">I4s", data, pos)
        name = kind.decode("latin-1")
        if name == "IEND":
            return
        if name not in ("IHDR", "PLTE", "IDAT", "fdAT", "acTL", "fcTL"):
            yield name, length + 12
        pos += length + 12


def _webp_metadata(data: bytes):
    """(name, bytes) of each RIFF chunk that is not image data: ICCP, EXIF, XMP and unknown ones."""
    pos, n = 12, len(data)
    while pos + 8 <= n:
        kind, length = struct.unpack_from("<4sI", data, pos)
        name = kind.decode("latin-1")
        if name not in ("VP8 ", "VP8L", "VP8X", "ALPH", "ANIM", "ANMF"):
            yield name.strip(), length + 8
        pos += 8 + length + (length & 1)


METADATA_READERS = {"JPEG": _jpeg_metadata, "PNG": _png_metadata, "WEBP": _webp_metadata}


def metadata_cost(data: bytes) -> int:
    """Bytes Pillow may hold for this file's metadata (see MAX_METADATA), counted from the raw bytes;
    ImageTooLarge naming the largest kind of segment when there is more than the bound."""
    reader = METADATA_READERS.get(sniff_image(data))
    if reader is None:
        return 0
    kinds: dict[str, list[int]] = {}
    total = segments = 0
    for name, nbytes in reader(data):
        seen = kinds.setdefault(name, [0, 0])
        seen[0] += nbytes
        seen[1] += 1
        total += nbytes
        segments += 1
        if total > MAX_METADATA or segments > MAX_METADATA_SEGMENTS:
            break
    if total > MAX_METADATA or segments > MAX_METADATA_SEGMENTS:
        name, (nbytes, count) = max(kinds.items(), key=lambda kv: kv[1])
        raise ImageTooLarge(f"Expected at most {MAX_METADATA >> 20} MiB of metadata in {MAX_METADATA_SEGMENTS} segments "
                            f"(JPEG APP/COM segments, PNG text/iCCP chunks, WebP ICCP/EXIF/XMP). Received: {total / (1 << 20):.1f} MiB "
                            f"in the first {segments} segments, {nbytes / (1 << 20):.1f} MiB of it in {count} {name} segment(s)")
    inflated = sum(c for name, (_, c) in kinds.items() if name in PNG_COMPRESSED_CHUNKS)
    # Each inflated chunk is held as bytes and as text: twice what Pillow lets it grow to.
    inflated = 2 * min(inflated * PNG_TEXT_CHUNK, PNG_TEXT_MEMORY + PNG_TEXT_CHUNK)
    return total * METADATA_COPIES + inflated


def header_cost(data: bytes) -> int:
    """Bytes Pillow keeps of this file from reading its header until the image is closed: its metadata
    (metadata_cost, ImageTooLarge over the bound) and, for a format whose decoder copies the file
    (FORMAT_COST), the file. Counted from the raw bytes: a batch reserves its images' before opening any."""
    fmt = sniff_image(data)
    return metadata_cost(data) + (len(data) if FORMAT_COST.get(fmt, NO_FORMAT_COST)[1] else 0)


def _text_limit(e: Exception) -> RequestError | None:
    """Pillow's refusal of a PNG's text over PNG_TEXT_CHUNK / PNG_TEXT_MEMORY, as a 413 that says so."""
    if "MAX_TEXT" not in str(e):
        return None
    return ImageTooLarge(f"Expected PNG text and iCCP chunks that inflate to at most {PNG_TEXT_CHUNK >> 20} MiB each and "
                         f"{PNG_TEXT_MEMORY >> 20} MiB in all. Received: more ({e})")


class _Source(io.BytesIO):
    """The image bytes, read by Pillow chunk by chunk while decoding: past the deadline, the next read stops it."""

    deadline: float | None = None

    def read(self, n=-1):
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlineExceeded()
        return super().read(n)


def open_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS, formats=ALLOWED_FORMATS,
               deadline: float | None = None, size: int | None = None) -> Image.Image:
    """Read the header only: format, size and mode are known, no pixel is decoded yet (Pillow opens lazily).

    `size` (the model's input side), if given, lets a JPEG over `max_pixels` through when a reduced-scale
    decode that is still at least that size is within it (`limit_scale`); without it the header's size counts.
    `deadline` (time.monotonic()) stops a decode that runs past it (DeadlineExceeded).
    """
    if not data:
        raise BadImage("Expected image bytes (JPEG, PNG, WebP or BMP). Received: an empty body")
    # Pillow's own bomb guard warns at 89 Mpx and raises at twice that; ours is stricter and
    # configurable, so Pillow's is turned off (here, not at import) to give one clear message.
    Image.MAX_IMAGE_PIXELS = None
    PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY = PNG_TEXT_CHUNK, PNG_TEXT_MEMORY
    header = header_cost(data)  # before Pillow reads any of it
    try:
        src = _Source(data)
        img = Image.open(src)
    except UnidentifiedImageError:
        head = data[:16]
        raise UnsupportedImage(
            f"Expected a JPEG, PNG, WebP or BMP image. Received: {len(data)} bytes that are not an image (starting {head!r})"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        if limit := _text_limit(e):
            raise limit from None
        # A format was recognised but its header is cut short or broken (Pillow's plugins raise
        # these from Image.open itself, e.g. "Truncated File Read" for a JPEG cut inside its
        # header, "could not create decoder object" for a WebP missing its last byte).
        raise BadImage(f"Expected a complete, decodable image. Received: {len(data)} bytes whose header fails to parse ({e})") from None
    if img.format not in formats:
        raise UnsupportedImage(f"Expected a JPEG, PNG, WebP or BMP image. Received: {img.format}")
    w, h = img.size
    img.edgeport_min_scale = 1
    if max_pixels is not None and w * h > max_pixels:
        img.edgeport_min_scale = limit_scale(img, size, max_pixels)
    img.edgeport_coefficients = coefficient_buffer(img, data) if img.format in JPEG_FORMATS else 0
    img.edgeport_header = header
    if img.format in JPEG_FORMATS and (img.info.get("progressive") or img.info.get("progression")):
        # Only progressive JPEGs: libjpeg refuses a baseline one with repeated scans at once (60 ms for
        # 200 copies), and counting costs ~2.7 ms per MB (29 ms for a 10.7 MB file that decodes in 421 ms).
        scans = count_scans(data, MAX_JPEG_SCANS)
        if scans > MAX_JPEG_SCANS:
            raise BadImage(f"Expected a JPEG of at most {MAX_JPEG_SCANS} scans. Received: more "
                                "(a progressive JPEG repeating scans costs seconds of CPU per image)")
    src.deadline = deadline
    img.decodermaxblock = DECODE_CHUNK
    # Whether EXIF may turn the image (a full-size copy): a JPEG's EXIF is in its header, but Pillow's
    # PNG getexif() decodes the whole image to look for an eXIf chunk, so look for the chunk's name.
    if img.format in JPEG_FORMATS:
        try:
            img.edgeport_may_rotate = img.getexif().get(EXIF_ORIENTATION, 1) in UPRIGHT
        except Exception:  # noqa: BLE001 - a broken EXIF block: only the estimate is at stake, assume the copy
            img.edgeport_may_rotate = True
    else:
        img.edgeport_may_rotate = b"eXIf" in data or b"EXIF" in data
    return img


def count_scans(data: bytes, limit: int) -> int:
    """SOS markers in a JPEG, counting stops past `limit`: one pass over a normal file, and a bomb is
    refused at its limit+1st scan (bytes.count over 63 MB of 0xFF-rich scans took 0.5 s)."""
    n = pos = 0
    while n <= limit:
        pos = data.find(b"\xff\xda", pos)
        if pos < 0:
            break
        n += 1
        pos += 2
    return n


def scaled_size(img: Image.Image, scale: int) -> tuple[int, int]:
    """The image's size once decoded at 1/scale (libjpeg rounds each side up)."""
    return -(-img.size[0] // scale), -(-img.size[1] // scale)


def limit_scale(img: Image.Image, size: int | None, max_pixels: int) -> int:
    """The smallest DCT scale that brings an image over the pixel limit within it while still at least the
    model's `size`; ImageTooLarge when there is none (not a JPEG, no size known, or too large even at 1/8)."""
    w, h = img.size
    most = reduced_scale(img, size) if size else 1
    for s in (2, 4, 8):
        if s <= most and scaled_size(img, s)[0] * scaled_size(img, s)[1] <= max_pixels:
            return s
    if most > 1:
        sw, sh = scaled_size(img, most)
        raise ImageTooLarge(f"Expected an image of at most {max_pixels:,} pixels once decoded (a JPEG at up to 1/{most} scale "
                            f"for this model's {size} px input). Received: {w}x{h} = {w * h:,} pixels, "
                            f"{sw * sh:,} at 1/{most}")
    raise ImageTooLarge(f"Expected an image of at most {max_pixels:,} pixels. Received: {w}x{h} = {w * h:,} pixels")


def coefficient_buffer(img: Image.Image, data: bytes) -> int:
    """Bytes libjpeg holds for the whole image's DCT coefficients, at full size whatever the decode scale,
    when the JPEG has more than one scan (progressive, or components in separate scans): 2 bytes for each
    of the 64 coefficients of every 8x8 block of every component. 0 for a single-scan JPEG, which is
    decoded a row of blocks at a time. Measured peak RSS growth decoding a 4:2:0 progressive JPEG at 1/8
    (this figure plus the reduced frame in brackets): 24 Mpx 73.5 MiB (70.1), 48 Mpx 143.7 (140.2),
    100 Mpx 295.4 (292.2)."""
    progressive = img.info.get("progressive") or img.info.get("progression")
    layers = getattr(img, "layer", None) or []
    if not progressive:
        sos = data.find(b"\xff\xda")  # the first scan's header: length (2 bytes), then its component count
        if sos < 0 or sos + 4 >= len(data) or data[sos + 4] >= len(layers):
            return 0
    if not layers:
        return 0
    hmax = max(l[1] for l in layers)
    vmax = max(l[2] for l in layers)
    w, h = img.size
    blocks = 0
    for _, hs, vs, _ in layers:
        bw = -(-w * hs // (hmax * 8))  # libjpeg pads each component's blocks to its sampling factor
        bh = -(-h * vs // (vmax * 8))
        blocks += (-(-bw // hs) * hs) * (-(-bh // vs) * vs)
    return blocks * 64 * 2


# What decoding costs per pixel, by the mode Pillow opens the file in: (bytes a pixel of the decoded
# frame, bytes a pixel of the copies on the way to RGB that are alive with it). Pillow keeps every mode
# of 2 to 4 bands in 4 bytes a pixel (an LA PNG costs what an RGBA one does), 1-band ones in 1, 16-bit
# ones in 2. convert("RGB") makes one 4-byte copy; a 16-bit frame goes through _to_8bit first (a numpy
# copy, the shifted values, the 8-bit result: 2 + 2 + 1; then the 8-bit image and its RGB copy, 1 + 4),
# a 32-bit one through three 4-byte temporaries. Checked against measured peaks for every format and mode by
# tests/test_admission_estimates.py (benchmarks/measure_decode_peaks.py for the table in docs/serving.md).
MODE_COST = {
    "RGB": (4, 0),
    "RGBA": (4, 4), "RGBX": (4, 4), "CMYK": (4, 4), "YCbCr": (4, 4), "LA": (4, 4), "La": (4, 4), "PA": (4, 4),
    "L": (1, 4), "P": (1, 4), "1": (1, 4),
    "I;16": (2, 5), "I;16B": (2, 5), "I;16L": (2, 5), "I;16N": (2, 5),
    "I": (4, 12),
}
UNKNOWN_MODE_COST = (4, 12)  # the dearest known: a mode Pillow may add is not under-reserved
# Bytes a pixel that a format's decoder holds beside Pillow's frame, and whether it holds a copy of the
# file: libwebp's animation decoder, which Pillow uses for every WebP, keeps canvases of its own (RGB
# WebP measured 15.9 bytes a pixel in all) and the file's bytes.
FORMAT_COST = {"WEBP": (14, True)}
NO_FORMAT_COST = (0, False)


def bytes_per_pixel(img: Image.Image) -> int:
    """Bytes of one decoded pixel in the image's own mode (before conversion to RGB)."""
    return MODE_COST.get(img.mode, UNKNOWN_MODE_COST)[0]


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
# move by 0.4-1 level on average; on the demo model 2 of 540 top-1 answers changed, both near-ties (tests/test_decode_modes.py).
DECODE_MODES = ("exact", "fast")


def reduced_scale(img: Image.Image, size: int) -> int:
    """The factor "fast" decoding divides this image by (1 = decoded in full), as Image.draft chooses it."""
    if img.format not in JPEG_FORMATS:
        return 1
    fits = min(img.size[0] // size, img.size[1] // size)  # 0 for an image smaller than the model's input
    return next((s for s in (8, 4, 2) if fits >= s), 1)


def decode_scale(img: Image.Image, size: int, fast: bool = False) -> int:
    """The DCT scale this opened image is decoded at (1 = in full). "fast": the most that keeps the model's
    input size. "exact": in full, or for a JPEG over the pixel limit the least that brings it within
    (open_image found it): the closest to the trainer's pixels that the limit allows."""
    least = getattr(img, "edgeport_min_scale", 1)
    return max(reduced_scale(img, size), least) if fast else least


DECODER_OVERHEAD = 8 << 20  # zlib windows, libjpeg's buffers, Python objects: a few MiB whatever the size
# And what grows with the size beyond the frames (row buffers, allocator rounding): measured 0.13-0.17
# bytes a pixel between 4 and 16 Mpx; without it a 16 Mpx JPEG's reservation was 2% over its peak, and
# a larger --max-pixels would have been under it.
SLACK_PER_PIXEL = 0.25


def decode_peak(img: Image.Image, size: int, fast: bool = False) -> int:
    """Bytes decoding this (opened, not yet decoded) image can hold at its peak: the decoded frame in its
    own mode and the copies on the way to RGB (MODE_COST), the format's own buffers (FORMAT_COST), an
    EXIF rotation's copy of the frame, a multi-scan JPEG's whole coefficient buffer (coefficient_buffer,
    at full size even when decoded at reduced scale), what Pillow keeps of the header (header_cost) and
    the decoders' fixed buffers. After a reduced-scale decode the resize comes first: the copies are small.
    Measured against it: docs/serving.md "What a request may cost"."""
    scale = decode_scale(img, size, fast)
    w, h = scaled_size(img, scale)
    px = w * h
    frame, to_rgb = MODE_COST.get(img.mode, UNKNOWN_MODE_COST)
    per_px, _ = FORMAT_COST.get(img.format, NO_FORMAT_COST)
    copied_px = px if scale == 1 else size * size
    rotate = frame if getattr(img, "edgeport_may_rotate", True) else 0  # never img.getexif() here: for a PNG it decodes
    return (int(px * (frame + per_px + SLACK_PER_PIXEL)) + copied_px * (to_rgb + rotate) + size * size * 4 + DECODER_OVERHEAD
            + getattr(img, "edgeport_coefficients", 0) + getattr(img, "edgeport_header", 0))


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit (and 32-bit integer) greyscale -> 8-bit "L" by its top 8 bits.

    Pillow's convert("RGB") clips such values at 255, so a 16-bit PNG came out near-white and was
    answered confidently wrong. A 16-bit PNG opens as I;16; other files may give mode I with 16-bit
    values (anything over 255 is taken as 16-bit).
    """
    a = np.asarray(img)
    if img.mode.startswith("I;16"):
        return Image.fromarray((a >> 8).astype(np.uint8), "L")  # uint16 >> 8: no wider temporaries
    if a.size and int(a.max()) > 255:
        a = np.clip(a, 0, 65535) >> 8
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")


def _cut_short(img: Image.Image) -> bool:
    """A baseline JPEG cut short but ending with an EOI marker: libjpeg only warns ("premature end of
    data segment") and Pillow does not pass warnings on; the blocks it had no data for are left zero,
    which decodes to exactly (128, 128, 128). So: the last row of blocks entirely that grey.

    A real photo's bottom 8 rows are never exactly flat 128 (sensor noise); a synthetic image with a
    flat mid-grey bottom band would be refused (400) - the price of catching silent truncation,
    measured in tests/test_hostile_images.py. Progressive JPEGs keep their earlier scans' coefficients
    when cut, so they are not flat; a cut progressive JPEG is still answered (blurred): not caught.
    """
    if img.format not in JPEG_FORMATS or img.info.get("progressive") or img.info.get("progression"):
        return False
    if img.mode not in ("RGB", "L", "CMYK"):
        return False
    w, h = img.size
    rows = max(1, min(h, 8 * img.size[1] // max(1, getattr(img, "_ep_full_height", h))))
    tail = np.asarray(img.crop((0, h - rows, w, h)))
    return tail.size > 0 and bool((tail == 128).all())


def to_model_input(img: Image.Image, size: int, fast: bool = False, timings: dict | None = None) -> np.ndarray:
    """Decode, EXIF-rotate, convert to RGB and resize (bilinear) to (size, size, 3) uint8.

    fast=True decodes a large JPEG at reduced scale (see DECODE_MODES); a JPEG over the pixel limit is
    decoded at reduced scale in either mode (decode_scale).

    `timings`, if given, receives "decode" and "preprocess" in milliseconds:
    the metrics split the two because they scale differently (decode with the
    file's pixels, preprocess with the model's).
    """
    t0 = time.perf_counter()
    box = None
    img._ep_full_height = img.size[1]
    try:
        scale = decode_scale(img, size, fast)
        if scale > 1:
            # draft() also returns the source rectangle in the reduced image: its edges round up
            # (641 px at 1/2 is 321 px), so resizing that box maps exactly the original frame.
            # Asking for the size at 1/scale makes draft() choose exactly that scale.
            drafted = img.draft("RGB", (img.size[0] // scale, img.size[1] // scale))
            if drafted is None:  # a JPEG Pillow cannot reduce (not one tile): decoding it in full would break the estimate
                raise ImageTooLarge(f"Expected a JPEG that can be decoded at 1/{scale} scale. Received: a {img.format} "
                                    f"of {img.size[0]}x{img.size[1]} that cannot be reduced")
            box = drafted[1]
        img.load()
        if _cut_short(img):
            raise BadImage(f"Expected a complete, decodable image. Received: a {img.format} cut short "
                                "(its last rows carry no data; the file ends early)")
        t1 = time.perf_counter()
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        if box is not None:  # resize in the decoded frame, then turn upright: the box is in this frame
            img = img.resize((size, size), Image.BILINEAR, box=box)
        # Each of these returns a copy even when it has nothing to do: skip them when so.
        if orientation in UPRIGHT:
            img = img.transpose(UPRIGHT[orientation])
        if img.mode.startswith("I"):
            img = _to_8bit(img)
        if img.mode != "RGB":
            img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        if limit := _text_limit(e):  # a PNG's text after its image data is read after the pixels
            raise limit from None
        raise BadImage(f"Expected a complete, decodable image. Received: a {img.format} that fails to decode ({e})") from None
    if timings is not None:
        t2 = time.perf_counter()
        timings["decode"] = (t1 - t0) * 1e3
        timings["preprocess"] = (t2 - t1) * 1e3
    return arr


def decode_to_array(data: bytes, size: int, max_pixels: int | None = DEFAULT_MAX_PIXELS, fast: bool = False,
                    timings: dict | None = None, formats=ALLOWED_FORMATS, deadline: float | None = None) -> np.ndarray:
    t0 = time.perf_counter()
    img = open_image(data, max_pixels, formats, deadline, size=size)
    opened = time.perf_counter()
    arr = to_model_input(img, size, fast=fast, timings=timings)
    if timings is not None:  # reading the header is part of decoding
        timings["decode"] += (opened - t0) * 1e3
    return arr
