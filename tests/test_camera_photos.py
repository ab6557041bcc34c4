"""Camera-sized photos through the decoder, `serve`, `predict` and export's image reading, and raw
image bodies under whatever Content-Type a client sets (HTTPie labels stdin application/json).

The 48 Mpx photo is a demo shape rendered at 866x866 and enlarged 8x to 6928x6928: decoded at 1/8
scale it is close to the 866 px original, so the two must get the same answer.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import edgeport_cmd, http
from edge_core.errors import RequestError
from edge_core.imageio import decode_peak, decode_scale, decode_to_array, open_image, sniff_image
from edge_server.cli import build_parser, installed_version, main
from edge_server.errors import http_status
from server_helpers import assert_json_error

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from attack import Server, make_cgroup  # noqa: E402

MiB = 1 << 20
SIDE = 866  # x 8 = 6928: 6928 x 6928 = 48.0 Mpx


def encode(img: Image.Image, fmt="JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def shape():
    from trainer.demo_data import render_image

    return render_image("circle", np.random.default_rng(7), SIDE)


@pytest.fixture(scope="module")
def photos(shape, tmp_path_factory):
    """small.jpg (866 px), big.jpg and big_progressive.jpg (48 Mpx) on disk."""
    d = tmp_path_factory.mktemp("camera")
    big = shape.resize((SIDE * 8, SIDE * 8), Image.BILINEAR)
    (d / "small.jpg").write_bytes(encode(shape, quality=95))
    (d / "big.jpg").write_bytes(encode(big, quality=90))
    (d / "big_progressive.jpg").write_bytes(encode(big, quality=90, progressive=True))
    return d


@pytest.fixture(scope="module")
def png_100mpx(tmp_path_factory):
    """A real 100 Mpx PNG (12000 x 8334), bilevel so it is small and quick to make."""
    path = tmp_path_factory.mktemp("png") / "100mpx.png"
    Image.new("1", (12000, 8334), 1).save(path, "PNG")
    return path


# --- the decoder -----------------------------------------------------------------------------------

def test_a_48_mpx_jpeg_is_decoded_at_reduced_scale_within_the_default_limit(photos):
    data = (photos / "big.jpg").read_bytes()
    img = open_image(data, size=64)
    assert (decode_scale(img, 64), decode_scale(img, 64, fast=True)) == (2, 8)  # exact: the least that fits 16 Mpx
    assert decode_peak(img, 64, fast=True) < 20 * MiB  # a 866 x 866 frame, not 48 Mpx
    fast = decode_to_array(data, 64, fast=True).astype(int)
    small = decode_to_array((photos / "small.jpg").read_bytes(), 64).astype(int)
    assert np.abs(fast - small).mean() < 3
    assert decode_to_array(data, 64).shape == (64, 64, 3)


def test_a_progressive_jpeg_is_estimated_with_its_whole_coefficient_buffer(photos):
    """libjpeg keeps every coefficient of a multi-scan JPEG, at full size whatever the scale: 2 bytes x
    1.5 coefficients a pixel for 4:2:0, ~137 MiB for 48 Mpx (measured growth in imageio.coefficient_buffer)."""
    img = open_image((photos / "big_progressive.jpg").read_bytes(), size=64)
    assert 130 * MiB < img.edgeport_coefficients < 145 * MiB
    assert decode_peak(img, 64, fast=True) > 130 * MiB
    assert open_image((photos / "big.jpg").read_bytes(), size=64).edgeport_coefficients == 0


def test_the_limit_counts_the_header_for_other_formats_and_for_unknown_model_sizes(png_100mpx, photos):
    t0 = time.perf_counter()
    with pytest.raises(RequestError) as e:
        open_image(png_100mpx.read_bytes(), size=64)
    assert http_status(e.value) == 413 and "12000x8334" in e.value.message and time.perf_counter() - t0 < 1
    with pytest.raises(RequestError):  # no model size: nothing says how far a JPEG may be reduced
        open_image((photos / "big.jpg").read_bytes())
    with pytest.raises(RequestError) as e:  # too large even at 1/8
        open_image((photos / "big.jpg").read_bytes(), max_pixels=500_000, size=64)
    assert "once decoded" in e.value.message and "at 1/8" in e.value.message


def test_magic_bytes_name_the_format(photos, png_100mpx):
    assert sniff_image((photos / "small.jpg").read_bytes()) == "JPEG"
    assert sniff_image(png_100mpx.read_bytes()[:16]) == "PNG"
    assert sniff_image(encode(Image.new("RGB", (8, 8)), "WEBP")) == "WEBP"
    assert sniff_image(encode(Image.new("RGB", (8, 8)), "BMP")) == "BMP"
    assert sniff_image(b'{"instances": [1, 2]}') is None
    assert sniff_image(b"") is None


# --- the server ------------------------------------------------------------------------------------

def top1(answer) -> str:
    return answer["predictions"][0]["label"]


def test_a_48_mpx_jpeg_gets_the_answer_of_the_same_photo_at_one_eighth(server, photos):
    jpeg = {"Content-Type": "image/jpeg"}
    status, small, _ = http("POST", server.url + "/predict", (photos / "small.jpg").read_bytes(), jpeg)
    assert status == 200, small
    for name in ("big.jpg", "big_progressive.jpg"):
        status, big, _ = http("POST", server.url + "/predict", (photos / name).read_bytes(), jpeg)
        assert status == 200, big
        assert top1(big) == top1(small)
        assert abs(big["predictions"][0]["score"] - small["predictions"][0]["score"]) < 0.1


def test_a_100_mpx_png_is_413_before_decoding(server, png_100mpx):
    t0 = time.perf_counter()
    assert_json_error(*http("POST", server.url + "/predict", png_100mpx.read_bytes(), {"Content-Type": "image/png"}),
                      413, "at most 16,000,000 pixels", "12000x8334")
    assert time.perf_counter() - t0 < 2  # decoding 100 Mpx would take seconds


def test_image_bytes_are_taken_whatever_the_content_type_and_json_keeps_its_415(server, photos):
    data = (photos / "small.jpg").read_bytes()
    for ctype in ("application/json", "text/plain", "application/x-anything"):
        status, answer, _ = http("POST", server.url + "/predict", data, {"Content-Type": ctype})
        assert status == 200, (ctype, answer)
    assert_json_error(*http("POST", server.url + "/predict", json.dumps({"instances": [[1, 2]]}).encode(),
                            {"Content-Type": "application/json"}), 415, "Expected image bytes", "application/json")


def test_httpie_posting_a_photo_from_stdin(server, photos):
    exe = shutil.which("http", path=str(Path(sys.executable).parent)) or shutil.which("http")
    if exe is None:
        pytest.skip("HTTPie is not installed (pip install 'edgeport[dev]')")
    with open(photos / "small.jpg", "rb") as stdin:
        proc = subprocess.run([exe, "--print=b", "--check-status", "POST", server.url + "/predict"], stdin=stdin,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["predictions"]


def retried_post(url: str, data: bytes, tries: int = 20) -> tuple[int, dict]:
    """POST as a well-behaved client does: a 503 is retried after its Retry-After."""
    for _ in range(tries):
        status, answer, headers = http("POST", url, data, {"Content-Type": "image/jpeg"}, timeout=120)
        if status != 503:
            return status, answer
        time.sleep(float(headers.get("Retry-After") or 1))
    return status, answer


def test_48_mpx_photos_at_once_under_the_raspberry_pi_4_memory_cap(int8_bundle, photos, tmp_path):
    cgroup, why = make_cgroup(600 * MiB)
    if cgroup is None:
        pytest.skip(f"no writable memory cgroup to cap the server: {why}")
    srv = Server(int8_bundle, cgroup, tmp_path / "server.log")
    try:
        srv.start()
        url = f"http://127.0.0.1:{srv.port}/predict"
        bodies = [(photos / name).read_bytes() for name in ("big.jpg", "big_progressive.jpg") * 3]
        results = [None] * len(bodies)

        def one(i):
            results[i] = retried_post(url, bodies[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [status for status, _ in results] == [200] * len(bodies), results
        assert len({top1(answer) for _, answer in results}) == 1
        assert cgroup.oom_kills() == 0 and srv.proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
    finally:
        if srv.proc is not None:
            srv.proc.terminate()
            srv.proc.wait(timeout=10)
        cgroup.remove()


# --- the commands ----------------------------------------------------------------------------------

def test_predict_answers_a_48_mpx_photo_and_keeps_max_pixels(int8_bundle, photos, png_100mpx, capsys):
    assert main(["predict", str(int8_bundle), str(photos / "big.jpg")]) == 0
    out = capsys.readouterr().out
    assert "circle" in out or "square" in out or "triangle" in out
    small_png = photos / "small.png"
    Image.open(photos / "small.jpg").save(small_png)
    assert main(["predict", str(int8_bundle), str(small_png), "--max-pixels", "1000"]) == 2
    assert "at most 1,000 pixels" in capsys.readouterr().err


def test_export_and_bench_read_images_with_the_same_max_pixels(photos, tmp_path, monkeypatch):
    from exporter import calibration as calib
    from exporter import pipeline

    small_png = tmp_path / "c" / "circle" / "a.png"
    small_png.parent.mkdir(parents=True)
    Image.open(photos / "small.jpg").resize((1000, 1000)).save(small_png)
    shutil.copy(photos / "big.jpg", small_png.parent / "b.jpg")
    items = calib.folder_items(tmp_path / "c", ["circle"])
    x, _ = calib.load_images(items, 64)  # the 1 Mpx PNG, and the 48 Mpx JPEG at reduced scale
    assert len(x) == 2
    x, _ = calib.load_images(items, 64, max_pixels=800_000)  # the PNG is over; the JPEG fits at 1/8 (866 x 866)
    assert len(x) == 1

    seen = {}
    monkeypatch.setattr(pipeline, "export", lambda cfg: seen.setdefault("cfg", cfg))
    args = build_parser().parse_args(["export", "runs/x", "--max-pixels", "1234"])
    args.func(args)
    assert seen["cfg"].max_pixels == 1234
    assert build_parser().parse_args(["bench", "b", "--max-pixels", "99"]).max_pixels == 99
    assert build_parser().parse_args(["export", "runs/x"]).max_pixels == 16_000_000


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    proc = subprocess.run([*edgeport_cmd(), "--version"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0 and proc.stdout.strip() == f"edgeport {version('edgeport')}" == f"edgeport {installed_version()}"
