import hashlib

import numpy as np
import pytest
from PIL import Image

from trainer.demo_data import SHAPES, DemoDataConfig, generate


def digest(paths):
    return {p.relative_to(p.parents[1]).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_generator_is_deterministic(tmp_path):
    a = generate(DemoDataConfig(tmp_path / "a", classes=4, per_class=5, size=48, seed=7))
    b = generate(DemoDataConfig(tmp_path / "b", classes=4, per_class=5, size=48, seed=7))
    assert digest(a) == digest(b)
    c = generate(DemoDataConfig(tmp_path / "c", classes=4, per_class=5, size=48, seed=8))
    assert digest(a) != digest(c)


def test_writes_real_images_one_folder_per_class(tmp_path):
    paths = generate(DemoDataConfig(tmp_path, classes=3, per_class=4, size=40))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(list(SHAPES)[:3])
    assert len(paths) == 12
    for p in paths:
        with Image.open(p) as img:
            assert img.format == "JPEG" and img.size == (40, 40) and img.mode == "RGB"


def test_colour_does_not_give_the_class_away(tmp_path):
    """Mean colour per class is about the same: only the shape separates classes."""
    generate(DemoDataConfig(tmp_path, classes=3, per_class=60, size=32))
    means = [np.mean([np.asarray(Image.open(p)).mean((0, 1)) for p in sorted((tmp_path / c).glob("*.jpg"))], 0)
             for c in list(SHAPES)[:3]]
    spread = np.ptp(np.array(means), axis=0)
    assert spread.max() < 20, means


@pytest.mark.parametrize("kwargs", [dict(classes=1), dict(classes=99), dict(per_class=0), dict(size=4)])
def test_bad_options_are_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError, match="Received"):
        DemoDataConfig(tmp_path, **kwargs)
