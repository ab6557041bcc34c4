"""The similarity score on the shared sets, at several probe resolutions: the measurements the
threshold in trainer/similarity.py (CALIBRATIONS) was chosen from.

    .venv/bin/python benchmarks/similarity_table.py                 # 224, 160, 128, 96 px; 128 images a set
    .venv/bin/python benchmarks/similarity_table.py --sizes 224 --images 256

Weights: the real ImageNet MobileNetV2 0.35 (../shared/weights) through Keras' cache, as in
benchmarks/quadrant_study.py. "flat grey" is 128 images of one grey level each (20..235), "noise"
uniform random pixels. The trainer probes at the checkpoint's resolution (224 px) whatever it
trains at, because the score moves with the probe's resolution (this table).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quadrant_study import ROOT, SHARED, seed_keras_home  # noqa: E402

SETS = ("package_photos", "tuxpaint_objects", "font_digits", "opencv_digits")


def load_set(name: str, size: int, n: int):
    import numpy as np

    from trainer.data import IMAGE_SUFFIXES, load_pixels

    files = sorted(p for p in (SHARED / "datasets" / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    pick = np.random.default_rng(0).permutation(len(files))[:n]
    return load_pixels([(str(files[i]), 0) for i in pick], size)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 160, 128, 96])
    ap.add_argument("--images", type=int, default=128)
    args = ap.parse_args(argv)
    seed_keras_home()
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from trainer.backbones import build_base_with_info, get_backbone
    from trainer.similarity import calibration_for, estimate_similarity

    spec = get_backbone("mobilenet_v2")
    threshold = calibration_for("mobilenet_v2", 0.35, "imagenet")[0]
    rng = np.random.default_rng(0)
    table: dict[str, dict[int, float]] = {}
    started = time.perf_counter()
    for size in args.sizes:
        base, _ = build_base_with_info(spec, size, 0.35, "imagenet")
        sets = {name: load_set(name, size, args.images) for name in SETS}
        levels = np.linspace(20, 235, args.images).astype(np.uint8)
        sets["flat grey"] = np.broadcast_to(levels[:, None, None, None], (args.images, size, size, 3)).copy()
        sets["noise"] = rng.integers(0, 256, (args.images, size, size, 3), dtype=np.uint8)
        for name, x in sets.items():
            r = estimate_similarity(base, spec, x, alpha=0.35, log=lambda m: None)
            table.setdefault(name, {})[size] = r.score
        print(f"{size} px done", flush=True)
    print(f"\n| set | {' | '.join(f'{s} px' for s in args.sizes)} | label at 224 px (threshold {threshold}) |")
    print("|---|" + "---|" * (len(args.sizes) + 1))
    for name, row in table.items():
        label = ("high" if row[224] >= threshold else "low") if 224 in row else "-"
        print(f"| {name} | {' | '.join(f'{row[s]:.3f}' for s in args.sizes)} | {label} |")
    print(f"\n{args.images} images a set, {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
