"""Decoding changes pixels only when asked to, and the change is measured on the demo data.

The issue's floor: whatever changes pixels must keep >= 99% top-1 agreement
with full decoding on the demo data. The server's default decoding is exact
(the trainer's pixels, so 100%). Reduced-scale JPEG decoding (--fast-decode)
measured 94-98% on the demo model - which flips 1-2% of its answers even under
+-1 level noise - so it stays opt-in; its test here records that figure and
guards against it getting worse.
"""

import io

import numpy as np
import pytest
from PIL import Image

from edge_server.service import ModelService, ServiceOptions


@pytest.fixture(scope="module")
def large_demo(tmp_path_factory):
    """Demo images rendered as larger photos: a 64 px model decodes them at 1/2, 1/4 and 1/8 scale."""
    from trainer.demo_data import DemoDataConfig, generate

    files = []
    for size, seed in ((128, 21), (256, 22), (512, 23)):
        files += generate(DemoDataConfig(tmp_path_factory.mktemp(f"demo{size}"), classes=3, per_class=20, size=size, seed=seed))
    return [(f, f.read_bytes()) for f in files]


def _agreement(a: ModelService, b: ModelService, images) -> float:
    same = sum(a.predict_bytes(data, 1)[0][0]["index"] == b.predict_bytes(data, 1)[0][0]["index"] for _, data in images)
    return same / len(images)


def test_default_decoding_is_exact_and_agrees(int8_bundle, large_demo):
    from trainer.data import decode_image

    default = ModelService.from_path(int8_bundle, options=ServiceOptions(pool_size=1, threads=1))
    assert default.options.fast_decode is False
    for f, data in large_demo[::6]:
        assert np.array_equal(default.decode(data), decode_image(f, 64)), f
    exact = ModelService.from_path(int8_bundle, options=ServiceOptions(pool_size=1, threads=1, fast_decode=False))
    assert _agreement(default, exact, large_demo) >= 0.99


def test_fast_decoding_agreement_is_measured(int8_bundle, large_demo):
    fast = ModelService.from_path(int8_bundle, options=ServiceOptions(pool_size=1, threads=1, fast_decode=True))
    exact = ModelService.from_path(int8_bundle, options=ServiceOptions(pool_size=1, threads=1))
    scales = set()
    for _, data in large_demo:
        probe = Image.open(io.BytesIO(data))
        full = probe.size[0]
        probe.draft("RGB", (64, 64))
        scales.add(full // probe.size[0])
    assert scales == {2, 4, 8}
    agreement = _agreement(fast, exact, large_demo)
    print(f"fast-decode top-1 agreement with exact decoding on {len(large_demo)} demo images: {agreement:.1%}")
    # Below the 99% floor on this model (hence opt-in); a drop below 90% would mean the fast path broke.
    assert agreement >= 0.90
