"""Built-in demo data: coloured geometric shapes on textured backgrounds.

The class is the shape; colour, background, position, scale and rotation are
random and shared by every class, so nothing but the outline tells classes
apart and an untrained model sits at chance. Every image comes from its own
RNG seeded by (seed, class, index), so the output is byte-for-byte the same on
every run and does not depend on generation order.

Only numpy and Pillow: generating data must not need TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Vertex count (0 = ellipse) and the inner/outer radius ratio for stars.
SHAPES: dict[str, tuple[int, float]] = {
    "circle": (0, 1.0),
    "triangle": (3, 1.0),
    "square": (4, 1.0),
    "star": (5, 0.45),
    "hexagon": (6, 1.0),
    "cross": (4, 0.0),  # drawn as two bars; see _draw_shape
    "diamond": (4, 1.0),
    "pentagon": (5, 1.0),
}


@dataclass(frozen=True)
class DemoDataConfig:
    out_dir: Path
    classes: int = 3
    per_class: int = 100
    size: int = 96
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.classes <= len(SHAPES):
            raise ValueError(f"--classes must be between 2 and {len(SHAPES)}. Received: classes={self.classes}")
        if self.per_class < 1:
            raise ValueError(f"--per-class must be at least 1. Received: per_class={self.per_class}")
        if not 16 <= self.size <= 1024:
            raise ValueError(f"--size must be between 16 and 1024 pixels. Received: size={self.size}")


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A textured background: a colour gradient, stripes at a random angle, noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, math.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    img = c0 * (1 - t) + c1 * t
    freq, phase = rng.uniform(4, 14), rng.uniform(0, 2 * math.pi)
    angle2 = rng.uniform(0, math.pi)
    stripes = np.sin(2 * math.pi * freq * (np.cos(angle2) * xx + np.sin(angle2) * yy) + phase)
    img += stripes[..., None] * rng.uniform(5, 20)
    img += rng.normal(0, 8, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _polygon(cx, cy, r, n, inner, rot):
    if inner < 1.0:  # star: alternate outer and inner radius
        pts = []
        for i in range(2 * n):
            rr = r if i % 2 == 0 else r * inner
            a = rot + math.pi * i / n
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    return [(cx + r * math.cos(rot + 2 * math.pi * i / n), cy + r * math.sin(rot + 2 * math.pi * i / n)) for i in range(n)]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx, cy, r, rot, colour) -> None:
    n, inner = SHAPES[shape]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "cross":
        w = r * 0.35
        for a in (rot, rot + math.pi / 2):
            ca, sa = math.cos(a), math.sin(a)
            pts = [(cx + dx * ca - dy * sa, cy + dx * sa + dy * ca) for dx, dy in ((-r, -w), (r, -w), (r, w), (-r, w))]
            draw.polygon(pts, fill=colour)
    elif shape == "diamond":
        # A rhombus: a square squashed along one axis, then rotated.
        pts = [(0, -r), (r * 0.6, 0), (0, r), (-r * 0.6, 0)]
        ca, sa = math.cos(rot), math.sin(rot)
        draw.polygon([(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in pts], fill=colour)
    else:
        draw.polygon(_polygon(cx, cy, r, n, inner, rot), fill=colour)


def render_image(shape: str, rng: np.random.Generator, size: int) -> Image.Image:
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.22, 0.40) * size
    cx, cy = rng.uniform(r, size - r, 2)
    rot = rng.uniform(0, 2 * math.pi)
    # The shape's colour contrasts with the background under it, whatever that is.
    under = np.asarray(img)[int(cy), int(cx)].astype(float)
    colour = tuple(int(v) for v in np.where(under > 127, rng.uniform(0, 70, 3), rng.uniform(185, 255, 3)))
    _draw_shape(draw, shape, cx, cy, r, rot, colour)
    img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.0, 1.0)))
    arr = np.asarray(img).astype(np.float32) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def generate(config: DemoDataConfig, progress=None) -> list[Path]:
    """Write `per_class` JPEGs for each of the first `classes` shapes; return the paths."""
    names = list(SHAPES)[: config.classes]
    written = []
    for ci, shape in enumerate(names):
        folder = Path(config.out_dir) / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(config.per_class):
            rng = np.random.default_rng([config.seed, ci, i])
            path = folder / f"{shape}_{i:04d}.jpg"
            render_image(shape, rng, config.size).save(path, "JPEG", quality=90)
            written.append(path)
        if progress:
            progress(f"demo-data: {shape}: {config.per_class} images in {folder}")
    return written
