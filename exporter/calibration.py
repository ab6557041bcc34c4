"""Real images for int8 calibration and for verification, decoded exactly as the server decodes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_core.imageio import DEFAULT_MAX_PIXELS, decode_to_array

from .console import steps
from .errors import ExportError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def folder_items(root: Path, labels: list[str] | None = None) -> list[tuple[str, int]]:
    """Images under `root`; label -1 where the folder name is not a known class."""
    root = Path(root)
    if not root.is_dir():
        raise ExportError(f"Expected a folder of images. Received: {str(root)!r} (not a folder)")
    index = {name: i for i, name in enumerate(labels or [])}
    items = [
        (str(p), index.get(p.parent.name, -1))
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise ExportError(f"Expected images (JPEG/PNG/BMP/WebP) under {root}. Received: none")
    return items


def spread(items: list, limit: int, seed: int = 0) -> list:
    """At most `limit` items, drawn evenly across classes with a seeded shuffle."""
    if len(items) <= limit:
        return list(items)
    rng = np.random.default_rng(seed)
    by_label: dict[int, list] = {}
    for it in items:
        by_label.setdefault(it[1], []).append(it)
    pools = [list(np.array(g, dtype=object)[rng.permutation(len(g))]) for _, g in sorted(by_label.items())]
    out: list = []
    while len(out) < limit:
        for pool in pools:
            if pool and len(out) < limit:
                out.append(tuple(pool.pop()))
    return [(str(p), int(l)) for p, l in out]


def load_images(items, size: int, progress=None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((len(items), size, size, 3), np.uint8)
    y = np.array([int(l) for _, l in items], np.int64)
    bad = []
    keep = np.ones(len(items), bool)
    for i, (path, _) in enumerate(steps(items, "decoding", progress)):
        try:
            x[i] = decode_to_array(Path(path).read_bytes(), size, max_pixels)
        except Exception:  # a bad file among calibration images is skipped, and said
            keep[i] = False
            bad.append(path)
    if bad and progress:
        progress(f"warning: skipped {len(bad)} unreadable image(s): {bad[:5]}{' ...' if len(bad) > 5 else ''}")
    return x[keep], y[keep]
