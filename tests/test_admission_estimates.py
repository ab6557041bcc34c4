"""Every image format and mode the server decodes: the memory the service reserves before decoding
(imageio.decode_peak) against the peak RSS growth measured decoding it the server's way in a fresh
process, and what reading a header may cost before anything is reserved.

The cases and the measuring child are benchmarks/measure_decode_peaks.py's; here at MPX megapixels so
the whole file runs in ~20 s on 2 cores (the figures at 4 and 16 Mpx are in docs/serving.md).
"""

import io
import sys
from pathlib import Path

import pytest
from PIL import Image

from edge_core import imageio
from edge_core.errors import ImageTooLarge

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import measure_decode_peaks as mdp

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(),
                                reason="measuring a peak needs Linux's /proc/self/clear_refs to reset VmHWM")

MiB = 1 << 20
MPX = 1.5
# Refused after the header, nothing decoded: the class of the refusal.
REFUSED = {"gif": "UnsupportedImage", "tiff": "UnsupportedImage", "jpeg-icc-8mib": "ImageTooLarge"}
# Reading any header (before admission) may cost the metadata Pillow holds (METADATA_COPIES x
# MAX_METADATA at most) and a PNG's inflated text, never a size that grows with the file.
HEADER_BOUND = imageio.METADATA_COPIES * imageio.MAX_METADATA + 2 * (imageio.PNG_TEXT_MEMORY + imageio.PNG_TEXT_CHUNK)
CASES = [(name, mode) for name, (_, modes) in mdp.CASES.items() for mode in modes]


@pytest.fixture(scope="module")
def measured():
    return {(r["case"], r["decode"]): r for r in mdp.measure_cases(list(mdp.CASES), MPX)}


@pytest.mark.parametrize("case,mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_the_reservation_covers_the_measured_peak(measured, case, mode):
    r = measured[(case, mode)]
    assert r["opened"] < HEADER_BOUND, (r["opened"] / MiB, r)
    if case in REFUSED:
        assert r.get("refused", "").startswith(REFUSED[case]), r
        assert r["peak"] < 2 * MiB, r  # refused from the header: nothing decoded
        return
    assert "refused" not in r, r
    est, peak = r["estimate"], r["peak"]
    assert est >= peak, f"{case} {mode}: reserved {est / MiB:.1f} MiB, measured {peak / MiB:.1f} MiB"
    # Not absurdly above: the per-pixel part within 2x, plus the fixed decoder allowance.
    assert est <= 2 * peak + imageio.DECODER_OVERHEAD, f"{case} {mode}: reserved {est / MiB:.1f} MiB for {peak / MiB:.1f}"


def test_a_png_of_63_ztxt_chunks_is_refused_without_inflating_them():
    """66 kB that Pillow inflated to 61 MiB while reading the header, before any reservation."""
    bomb = mdp.ztxt_bomb()
    assert len(bomb) < 100_000
    r = mdp.measure_many([{"data": bomb}], [mdp.make("png-rgb", 0.05)])[0]
    assert r.get("refused", "").startswith("ImageTooLarge"), r
    assert "text" in r["refused"] and "Expected" in r["refused"] and "Received" in r["refused"]
    assert r["peak"] < 8 * MiB, r["peak"] / MiB


def test_an_icc_heavy_jpeg_is_refused_naming_its_segment_before_pillow_reads_it():
    data = mdp.icc_jpeg(64, 64, 8 << 20)
    with pytest.raises(ImageTooLarge) as e:
        imageio.open_image(data)
    assert "APP2 ICC_PROFILE" in e.value.message and "Received" in e.value.message
    ok = mdp.icc_jpeg(64, 64, 1 << 20)  # within the bound: admitted, and its copies reserved
    img = imageio.open_image(ok)
    assert img.edgeport_header >= imageio.METADATA_COPIES * (1 << 20)
    assert imageio.decode_peak(img, 224) > imageio.METADATA_COPIES * (1 << 20)


def test_thousands_of_tiny_segments_are_refused_by_count():
    """Each segment is a Python call in Pillow's header reader: bounded in number, not only in bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    comments = b"\xff\xfe\x00\x03x" * (imageio.MAX_METADATA_SEGMENTS + 1)
    with pytest.raises(ImageTooLarge, match="COM"):
        imageio.open_image(jpeg[:2] + comments + jpeg[2:])
    assert imageio.open_image(jpeg[:2] + comments[:5 * 10] + jpeg[2:]).edgeport_header > 0


def test_the_mode_table_names_every_mode_the_allowed_formats_open_in(measured):
    modes = {r["mode"] for r in measured.values() if "mode" in r}
    assert modes <= set(imageio.MODE_COST), modes - set(imageio.MODE_COST)


def test_a_batch_reserves_what_every_header_holds_before_opening_any(int8_bundle):
    """Each image's header is opened before the batch's decode is admitted: 32 images of 2 MiB of
    metadata each would hold ~190 MiB unreserved."""
    from edge_core.service import ModelService, RequestContext, ServiceOptions

    class Recording(RequestContext):
        def __init__(self):
            super().__init__()
            self.admitted = []

        def admit(self, nbytes, what):
            self.admitted.append((nbytes, what))

    service = ModelService.from_path(int8_bundle, options=ServiceOptions(pool_size=1, solo_threads=0, warmup_runs=0))
    images = [mdp.icc_jpeg(64, 48, 1 << 20)] * 3
    ctx = Recording()
    service.probabilities_for_images(images, ctx)
    (held, what), (peak, _) = ctx.admitted
    assert "headers of 3 images" in what and held >= 3 * imageio.METADATA_COPIES * (1 << 20)
    assert peak >= imageio.decode_peak(imageio.open_image(images[0], size=service.size), service.size)
