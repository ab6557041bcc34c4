"""The user's images: one subfolder per class -> a seeded, stratified split of decoded pixels.

Images are decoded by the server's own decoder (edge_core.imageio:
EXIF-rotated, RGB, bilinear resize to the model's square input, 16-bit
greyscale scaled to 8 bits, truncated files refused), so the model is
trained on the pixels it will be served; tests/test_skew.py keeps the two
in step. Every file is checked before training starts: one bad file
is skipped and listed, never a crash at epoch 7.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_core.errors import RequestError
from edge_core.imageio import ALLOWED_FORMATS, decode_to_array
from exporter.console import steps
from exporter.run_images import part_items, split_json

from .errors import TrainerError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"}


# The server's formats plus GIF, which training folders often hold (the server refuses it: a GIF
# upload is rarely a photo, and animated ones decode frame by frame). Pixel limit: Pillow's own bomb
# threshold; the server's tighter one is about a small board's memory, not about the training machine.
TRAIN_FORMATS = ALLOWED_FORMATS | {"GIF"}
TRAIN_MAX_PIXELS = 178_956_970


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """File -> (size, size, 3) uint8 RGB, by the server's decoder (exact mode). Raises ValueError for a file
    it refuses, with the server's reason."""
    try:
        return decode_to_array(Path(path).read_bytes(), size, TRAIN_MAX_PIXELS, formats=TRAIN_FORMATS)
    except RequestError as e:
        raise ValueError(e.message) from None


@dataclass
class Split:
    class_names: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    skipped: list[tuple[str, str]]  # (path, why)
    # The folder each part was scanned from: split.json stores images relative to it (exporter.run_images).
    roots: dict[str, str] = field(default_factory=dict)

    def counts(self, part: str) -> dict[str, int]:
        c = Counter(label for _, label in getattr(self, part))
        return {name: c.get(i, 0) for i, name in enumerate(self.class_names)}

    def imbalance_ratio(self) -> float:
        counts = [v for v in self.counts("train").values()]
        return max(counts) / max(1, min(counts))

    def to_json(self, run_dir: Path) -> dict:
        return split_json(self.class_names, {"train": self.train, "val": self.val}, self.roots, self.skipped, run_dir)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(Path(path).parent), indent=1))

    @classmethod
    def load(cls, path: Path, data: Path | None = None) -> "Split":
        """The run's split with each image's path found from here (see exporter.run_images.part_items)."""
        path = Path(path)
        d = json.loads(path.read_text())
        train, val = (part_items(d, part, path.parent, data) or [] for part in ("train", "val"))
        roots = {k: v["absolute"] for k, v in (d.get("roots") or {}).items()}
        return cls(d["class_names"], train, val, [tuple(x) for x in d["skipped"]], roots)


def _check_image(path: Path) -> str | None:
    """None if the decoder accepts the file (the server's checks: truncation, scans, formats), else why not."""
    try:
        decode_image(path, 8)
        return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    except ValueError as e:
        return str(e)


def scan_folder(root: Path, class_names: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, str]]]:
    """One subfolder per class -> (sorted class names, [(path, label)], [(skipped path, why)])."""
    root = Path(root)
    if not root.is_dir():
        raise TrainerError(f"Expected a folder with one subfolder per class. Received: {str(root)!r} (not a folder)")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = class_names if class_names is not None else found
    if class_names is not None and set(found) - set(class_names):
        raise TrainerError(
            f"{root} has class folders the training data does not: {sorted(set(found) - set(class_names))}. "
            f"Expected a subset of {class_names}. Received: {found}"
        )
    items, skipped = [], []
    for label, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            why = "not an image file suffix" if path.suffix.lower() not in IMAGE_SUFFIXES else _check_image(path)
            if why:
                skipped.append((str(path), why))
            else:
                items.append((str(path), label))
    return names, items, skipped


def stratified_split(items, val_fraction: float, seed: int):
    """Per class, a seeded shuffle, then the first `val_fraction` (at least one) to validation."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list] = {}
    for it in items:
        by_label.setdefault(it[1], []).append(it)
    train, val = [], []
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))
        n_val = max(1, round(len(group) * val_fraction)) if len(group) >= 2 else 0
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return train, val


def make_split(data_dir: Path, val_dir: Path | None = None, val_fraction: float = 0.2, seed: int = 0) -> Split:
    names, items, skipped = scan_folder(data_dir)
    if not items:
        raise TrainerError(f"Expected image files in one subfolder per class. Received: no readable images under {data_dir}")
    present = sorted({label for _, label in items})
    if len(present) < 2:
        raise TrainerError(
            f"Expected at least 2 classes (subfolders with images). Received: {len(present)} "
            f"({[names[i] for i in present]}) under {data_dir}"
        )
    if val_dir is not None:
        _, val, skipped_val = scan_folder(val_dir, class_names=names)
        if not val:
            raise TrainerError(f"Expected validation images in {val_dir}. Received: none readable")
        return Split(names, items, val, skipped + skipped_val, {"train": str(data_dir), "val": str(val_dir)})
    train, val = stratified_split(items, val_fraction, seed)
    return Split(names, train, val, skipped, {"train": str(data_dir), "val": str(data_dir)})


def load_pixels(items, size: int, progress=None, every: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image once into one uint8 array (the cache the tf.data pipeline reads)."""
    x = np.empty((len(items), size, size, 3), np.uint8)
    y = np.empty((len(items),), np.int32)
    for i, (path, label) in enumerate(steps(items, "decoding", progress, every)):
        x[i] = decode_image(path, size)
        y[i] = label
    return x, y
