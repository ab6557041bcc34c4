"""The trainer and the server must turn a file into the same pixels (no train/serve skew)."""

import numpy as np
from PIL import Image

from edge_core.imageio import decode_to_array
from trainer.data import decode_image


def test_trainer_and_server_decode_identically(demo_dir, tmp_path):
    files = sorted(demo_dir.glob("*/*.jpg"))[::97][:8]
    png = tmp_path / "x.png"
    Image.open(files[0]).resize((50, 70)).save(png)
    for f in [*files, png]:
        for size in (64, 40):
            assert np.array_equal(decode_image(f, size), decode_to_array(f.read_bytes(), size)), f
