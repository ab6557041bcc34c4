"""Measured decode peaks against the estimate the service reserves, per image format and mode.

For each case of CASES an image is made, written to a file and decoded in a fresh subprocess the way the
server decodes it (imageio.open_image with the server's pixel limit, then to_model_input); the child
reports the peak RSS growth (VmHWM after resetting it, minus VmRSS before the request) while reading
the header (before admission: must stay small whatever the file) and while decoding (must stay under
imageio.decode_peak, which the service reserves before decoding).

    python benchmarks/measure_decode_peaks.py               # every case at 4 and 16 Mpx
    python benchmarks/measure_decode_peaks.py --mpx 2 --only png

tests/test_admission_estimates.py runs the same cases at a few Mpx.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODEL_SIZE = 224  # the model input side the decode resizes to (MobileNet's)


# --- images ----------------------------------------------------------------------------------------

def pixels(w: int, h: int, bands: int, dtype=np.uint8) -> np.ndarray:
    """Gradients with a little noise: compresses like a photo (a noise image of 16 Mpx is a 48 MB PNG,
    over the body limit), decodes like any other. Integer arithmetic: 16 Mpx in well under a second."""
    top = 65535 if dtype == np.uint16 else 255
    x = np.arange(w, dtype=np.uint32) * top // max(w, 1)
    y = np.arange(h, dtype=np.uint32) * top // max(h, 1)
    noise = np.random.default_rng(0).integers(0, max(2, top // 64), (64, 64), dtype=np.uint32)
    noise = np.tile(noise, (-(-h // 64), -(-w // 64)))[:h, :w]
    a = np.empty((h, w, bands), dtype)
    for i in range(bands):
        a[..., i] = np.minimum((np.add.outer(y, x * (i + 1) % top) // (i + 2)) + noise, top)
    return a


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


# Adam7: (x start, y start, x step, y step) of each pass.
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
PNG_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # bands -> colour type (grey, grey+alpha, RGB, RGBA)


def png(a: np.ndarray, interlace: bool = False, extra: bytes = b"") -> bytes:
    """A PNG written by hand (Pillow writes neither interlaced nor 16-bit colour PNGs): 8- or 16-bit,
    1-4 bands, every row filter 0; `extra` chunks go before the image data."""
    a = a if a.ndim == 3 else a[..., None]
    h, w, bands = a.shape
    depth = 16 if a.dtype == np.uint16 else 8
    a = a.astype(">u2") if depth == 16 else a
    ihdr = struct.pack(">IIBBBBB", w, h, depth, PNG_COLOR_TYPES[bands], 0, 0, int(interlace))
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    raw = io.BytesIO()
    for xs, ys, xd, yd in passes:
        sub = a[ys::yd, xs::xd]
        if sub.size:
            rows = sub.reshape(sub.shape[0], -1).view(np.uint8)
            raw.write(np.hstack([np.zeros((len(rows), 1), np.uint8), rows]).tobytes())
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra
            + _chunk(b"IDAT", zlib.compress(raw.getvalue(), 6)) + _chunk(b"IEND", b""))


def ztxt_bomb(chunks: int = 63, each: int = 1 << 20) -> bytes:
    """A tiny PNG carrying `chunks` zTXt chunks of `each` zero bytes compressed ~1000:1 (66 kB for 63)."""
    text = zlib.compress(b"\0" * each, 9)
    extra = b"".join(_chunk(b"zTXt", b"k%d\0\0" % i + text) for i in range(chunks))
    return png(pixels(64, 64, 3), extra=extra)


def icc_jpeg(w: int, h: int, profile_bytes: int = 8 << 20) -> bytes:
    """A JPEG whose ICC profile fills APP2 segments: ~130 of them for 8 MiB."""
    return encode(Image.fromarray(pixels(w, h, 3)), "JPEG", quality=85, icc_profile=os.urandom(profile_bytes))


def png_text(w: int, h: int, chunks: int = 3, each: int = 512 << 10, kind: bytes = b"zTXt") -> bytes:
    """A PNG whose zTXt (or iCCP) chunks inflate to `each` bytes apiece: within the bounds, held while decoding."""
    body = zlib.compress(b"\0" * each, 9)
    extra = b"".join(_chunk(kind, b"k%d\0\0" % i + body) for i in range(chunks))
    return png(pixels(w, h, 3), extra=extra)


def exif_rotated(w: int, h: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(pixels(w, h, 3)), "JPEG", quality=85, exif=exif.tobytes())


def _rgb(w, h):
    return Image.fromarray(pixels(w, h, 3))


def _mode(mode, bands):
    return lambda w, h: Image.fromarray(pixels(w, h, bands)[..., 0] if bands == 1 else pixels(w, h, bands), mode)


# name -> (make(w, h) -> bytes, decode modes it is measured in). "fast" matters for JPEG only (DCT scaling).
BOTH, EXACT = ("exact", "fast"), ("exact",)
CASES = {
    "jpeg-420": (lambda w, h: encode(_rgb(w, h), "JPEG", quality=85), BOTH),
    "jpeg-444": (lambda w, h: encode(_rgb(w, h), "JPEG", quality=85, subsampling=0), BOTH),
    "jpeg-grey": (lambda w, h: encode(_mode("L", 1)(w, h), "JPEG", quality=85), BOTH),
    "jpeg-cmyk": (lambda w, h: encode(_mode("CMYK", 4)(w, h), "JPEG", quality=85), BOTH),
    "jpeg-exif-rotated": (exif_rotated, BOTH),
    "jpeg-progressive": (lambda w, h: encode(_rgb(w, h), "JPEG", quality=85, progressive=True), BOTH),
    "jpeg-progressive-444": (lambda w, h: encode(_rgb(w, h), "JPEG", quality=85, progressive=True, subsampling=0), BOTH),
    "jpeg-icc-1.5mib": (lambda w, h: icc_jpeg(w, h, 1536 << 10), EXACT),
    "jpeg-icc-8mib": (icc_jpeg, EXACT),  # over MAX_METADATA: refused before Pillow reads it
    "png-rgb": (lambda w, h: encode(_rgb(w, h), "PNG"), EXACT),
    "png-rgba": (lambda w, h: encode(_mode("RGBA", 4)(w, h), "PNG"), EXACT),
    "png-la": (lambda w, h: encode(_mode("LA", 2)(w, h), "PNG"), EXACT),
    "png-l": (lambda w, h: encode(_mode("L", 1)(w, h), "PNG"), EXACT),
    "png-1bit": (lambda w, h: encode(_mode("L", 1)(w, h).convert("1"), "PNG"), EXACT),
    "png-p": (lambda w, h: encode(_rgb(w, h).quantize(64), "PNG"), EXACT),
    "png-p-transparent": (lambda w, h: encode(_rgb(w, h).quantize(64), "PNG", transparency=0), EXACT),
    "png-16-grey": (lambda w, h: png(pixels(w, h, 1, np.uint16)), EXACT),
    "png-16-la": (lambda w, h: png(pixels(w, h, 2, np.uint16)), EXACT),
    "png-16-rgb": (lambda w, h: png(pixels(w, h, 3, np.uint16)), EXACT),
    "png-16-rgba": (lambda w, h: png(pixels(w, h, 4, np.uint16)), EXACT),
    "png-ztxt-1.5mib": (png_text, EXACT),
    "png-iccp-0.9mib": (lambda w, h: png_text(w, h, 1, 900 << 10, b"iCCP"), EXACT),
    "png-interlaced-rgb": (lambda w, h: png(pixels(w, h, 3), interlace=True), EXACT),
    "png-interlaced-rgba": (lambda w, h: png(pixels(w, h, 4), interlace=True), EXACT),
    "webp-lossy": (lambda w, h: encode(_rgb(w, h), "WEBP", quality=80, method=0), EXACT),
    "webp-lossless": (lambda w, h: encode(_rgb(w, h), "WEBP", lossless=True, quality=0, method=0), EXACT),
    "webp-alpha": (lambda w, h: encode(_mode("RGBA", 4)(w, h), "WEBP", quality=80, method=0), EXACT),
    "bmp-rgb": (lambda w, h: encode(_rgb(w, h), "BMP"), EXACT),
    "bmp-rgba": (lambda w, h: encode(_mode("RGBA", 4)(w, h), "BMP"), EXACT),
    "bmp-p": (lambda w, h: encode(_rgb(w, h).quantize(64), "BMP"), EXACT),
    # Outside the allow-list: refused after the header, nothing decoded.
    "gif": (lambda w, h: encode(_rgb(w, h).quantize(64), "GIF"), EXACT),
    "tiff": (lambda w, h: encode(_rgb(w, h), "TIFF"), EXACT),
}
# Not images of a given size: what reading their header may cost before admission.
HEADER_CASES = {
    "png-ztxt-bomb": lambda w, h: ztxt_bomb(),
}


def make(name: str, mpx: float) -> bytes:
    """Case `name` at `mpx` megapixels, 4:3."""
    side_w = int((mpx * 1e6 * 4 / 3) ** 0.5)  # 4:3, a camera's shape
    side_h = int(mpx * 1e6 / side_w)
    return CASES[name][0](side_w, side_h)


# --- the child: each decode in a fresh fork of one warmed-up process ---------------------------------

# One process imports the decoder and decodes a small file of every kind first (plugin imports and
# libraries' lazy set-up are not a request's), then forks once per measurement: each fork starts from
# the same state, resets its peak (VmHWM) to its RSS, and reports the growth. Forking instead of
# starting Python for each saves ~0.5 s a measurement.
CHILD = r"""
import ctypes, json, os, re, sys
from edge_core import imageio
from edge_core.errors import RequestError

def status(key):
    with open("/proc/self/status") as f:
        return int(re.search(key + r":\s+(\d+)", f.read())[1]) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:  # 5: VmHWM := VmRSS (Linux >= 4.0)
        f.write("5")

def one(path, size, fast, max_pixels):
    with open(path, "rb") as f:
        data = f.read()
    out = {"bytes": len(data)}
    # Free heap pages the warm-up left resident would be reused without showing as growth: hand them back.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    reset_peak()
    base = status("VmRSS")
    try:
        img = imageio.open_image(data, max_pixels, size=size)
        out["opened"] = status("VmHWM") - base
        out |= {"format": img.format, "mode": img.mode, "size": list(img.size),
                "estimate": imageio.decode_peak(img, size, fast), "scale": imageio.decode_scale(img, size, fast)}
        imageio.to_model_input(img, size, fast=fast)
        img.close()
    except RequestError as e:
        out["refused"] = f"{type(e).__name__}: {e}"
        out.setdefault("opened", status("VmHWM") - base)
    out["peak"] = status("VmHWM") - base
    return out

jobs = json.load(sys.stdin)
for path in jobs["warm"]:
    for fast in (False, True):
        try:
            imageio.to_model_input(imageio.open_image(open(path, "rb").read(), size=224), 224, fast=fast)
        except RequestError:
            pass
for job in jobs["jobs"]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = one(job["path"], job["size"], job["mode"] == "fast", job["max_pixels"])
        except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
            out = {"error": repr(e)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    os.waitpid(pid, 0)
    print(text, flush=True)
"""


def measure_many(jobs: list[dict], warm: list[bytes], python: str = sys.executable) -> list[dict]:
    """Decode each job's `data` (with its `size`, `mode` and `max_pixels`) in a fork of one process that
    decoded every `warm` file first; the peaks in bytes, one dict per job."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"warm": [], "jobs": []}
        for i, data in enumerate(warm):
            (Path(tmp) / f"warm{i}").write_bytes(data)
            spec["warm"].append(str(Path(tmp) / f"warm{i}"))
        for i, job in enumerate(jobs):
            (Path(tmp) / f"job{i}").write_bytes(job["data"])
            spec["jobs"].append({"path": str(Path(tmp) / f"job{i}"), "size": job.get("size", MODEL_SIZE),
                                 "mode": job.get("mode", "exact"), "max_pixels": job.get("max_pixels", 16_000_000)})
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        run = subprocess.run([python, "-c", CHILD], input=json.dumps(spec), capture_output=True, text=True, check=False,
                             env=env, timeout=600)
    if run.returncode:
        raise RuntimeError(f"the decode child failed:\n{run.stderr[-2000:]}")
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    for r in results:
        if "error" in r:
            raise RuntimeError(f"a decode failed unexpectedly: {r['error']}")
    return results


def warm_files() -> list[bytes]:
    """A small file of every case: what the child decodes before measuring."""
    return [make(name, 0.05) for name in CASES]


def measure_cases(names, mpx: float, **kw) -> list[dict]:
    """Every (case, decode mode) of `names` at `mpx` megapixels."""
    jobs, meta = [], []
    for name in names:
        data = make(name, mpx)
        for mode in CASES[name][1]:
            jobs.append({"data": data, "mode": mode, **kw})
            meta.append({"case": name, "decode": mode, "mpx": mpx})
    return [r | m for r, m in zip(measure_many(jobs, warm_files()), meta)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mpx", type=float, nargs="+", default=[4, 16])
    ap.add_argument("--only", default="", help="cases whose name contains this")
    args = ap.parse_args(argv)
    MiB = 1 << 20
    names = [n for n in CASES if args.only in n]
    print(f"{'case':22} {'decode':6} {'Mpx':>4} {'mode':6} {'file kB':>8} {'header MiB':>10} {'peak MiB':>8} "
          f"{'estimate':>8} {'est/peak':>8}")
    worst = float("inf")
    for mpx in args.mpx:
        for r in measure_cases(names, mpx):
            est = r.get("estimate")
            ratio = est / max(r["peak"], 1) if est else float("nan")
            worst = min(worst, ratio) if est else worst
            print(f"{r['case']:22} {r['decode']:6} {mpx:4g} {r.get('mode', '-'):6} {r['bytes'] / 1e3:8.0f} "
                  f"{r['opened'] / MiB:10.1f} {r['peak'] / MiB:8.1f} {(est or 0) / MiB:8.1f} {ratio:8.2f}"
                  + (f"  refused: {r['refused'][:70]}" if "refused" in r else ""), flush=True)
    bombs = [n for n in HEADER_CASES if args.only in n]
    for name, r in zip(bombs, measure_many([{"data": HEADER_CASES[n](0, 0)} for n in bombs], warm_files())):
        print(f"{name:22} {r['bytes'] / 1e3:.0f} kB: {r['opened'] / MiB:.1f} MiB while reading the header"
              + (f"; refused: {r['refused'][:100]}" if "refused" in r else ""))
    print(f"lowest estimate/peak: {worst:.2f}" + ("  (UNDER: an estimate below its measured peak)" if worst < 1 else ""))
    return int(worst < 1)


if __name__ == "__main__":
    sys.exit(main())
