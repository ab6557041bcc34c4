"""The quadrant study: does the quadrant rule pick a strategy as good as the best one?

Each shared dataset (../shared/datasets) at several training sizes per class, every
strategy, several seeds, the same epoch budget and early stopping:

    1      train everything (after a solved linear head), small learning rate
    2      the solved head, then the top blocks (the rule's depth for that quadrant)
    3      frozen base, solved linear head on the last block's features
    3-cut  frozen base cut after an earlier block (the design's alternative for quadrant 3)

For every cell it prints the validation accuracy (mean and spread over seeds) and the
time of each strategy, which one the rule picks (from the dataset's measured similarity
and the cell's size), the best, and the gap between them. The goal: the rule's choice is
within 1 point, or within the seed spread, of the best in every cell.

Every cell validates on the same held-out images of its dataset (never trained on), so
sizes compare. Weights: the real ImageNet MobileNetV2 0.35 through Keras' cache, seeded
from ../shared/weights into a temporary KERAS_HOME. openclipart_objects, the largest
ImageNet-like set (907 training images when all are used), measures strategy 2 against 3 as a
similar set grows toward the size line.

    .venv/bin/python benchmarks/quadrant_study.py            # the full table (README; ~40 minutes on 2 cores)
    .venv/bin/python benchmarks/quadrant_study.py --quick    # 1 small cell, 1 seed, 1 epoch: the test runs this
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEPORT_SHARED", ROOT.parent / "shared"))
WEIGHTS = SHARED / "weights" / "mobilenet_v2_0.35_224_no_top.tm.h5"


def seed_keras_home() -> Path:
    """Keras reads KERAS_HOME when it is imported: seed it before that, unless the user's cache has the file."""
    sys.path.insert(0, str(ROOT))
    from trainer.pretrained import cache_name, temporary_keras_home

    name = cache_name("mobilenet_v2", 0.35, 224)
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    if (home / "models" / name).is_file():
        return home
    if not WEIGHTS.is_file():
        sys.exit(f"quadrant_study: no ImageNet weights in {home / 'models'} nor at {WEIGHTS}")
    return temporary_keras_home(WEIGHTS, name)


@dataclass(frozen=True)
class Dataset:
    name: str
    sizes: tuple[int, ...]  # training images per class, per cell (0: all that are left)
    val_per_class: int  # held out once, the same for every cell and seed


DATASETS = (
    Dataset("tuxpaint_objects", (10, 25, 0), 15),
    # The largest ImageNet-like set: does strategy 2 overtake 3 as a similar set grows toward the size line?
    Dataset("openclipart_objects", (15, 40, 0), 20),  # 120, ~300 and all 907 training images
    Dataset("opencv_digits", (20, 150), 50),  # 150/class = 1,500 images: large; 20/class = 200: small
    Dataset("font_digits", (20, 150), 40),
)
# One small cell of the largest ImageNet-like set: the test checks the study runs end to end (Tux Paint's own
# quadrant-4 run is tests/test_transfer.py's), at ~80 s on 2 cores.
QUICK = (Dataset("openclipart_objects", (10,), 5),)
STRATEGIES = ("1", "2", "3", "3-cut")
CUT_BLOCK = 13  # of MobileNetV2's 17: the end of the 14x14 stage at 224 px, before the last four blocks


def split_files(root: Path, val_per_class: int):
    """{class: [files]} for the fixed validation set and for the training pool, seed-independent."""
    import numpy as np

    from trainer.data import IMAGE_SUFFIXES

    val, pool = {}, {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        order = np.random.default_rng(1234).permutation(len(files))
        val[folder.name] = [files[i] for i in order[:val_per_class]]
        pool[folder.name] = [files[i] for i in order[val_per_class:]]
    return val, pool


def link_folder(dest: Path, by_class: dict) -> Path:
    for name, files in by_class.items():
        (dest / name).mkdir(parents=True, exist_ok=True)
        for f in files:
            (dest / name / f.name).symlink_to(f)
    return dest


def measure_similarity(root: Path, size: int):
    """The trainer's own estimate, once per dataset: probe at the checkpoint's resolution."""
    import numpy as np

    from trainer.backbones import build_base_with_info, get_backbone
    from trainer.data import load_pixels, scan_folder
    from trainer.similarity import MAX_IMAGES, calibration_for, estimate_similarity

    spec = get_backbone("mobilenet_v2")
    base, loaded = build_base_with_info(spec, size, 0.35, "imagenet")
    _, items, _ = scan_folder(root)
    pick = np.random.default_rng(0).permutation(len(items))[:MAX_IMAGES]
    x, _ = load_pixels([items[i] for i in pick], loaded.resolution)
    threshold, calibrated, calibration = calibration_for("mobilenet_v2", 0.35, "imagenet")
    return estimate_similarity(base, spec, x, threshold=threshold, calibrated=calibrated, calibration=calibration,
                               alpha=0.35, log=lambda m: None)


def rule_choice(n_train: int, similarity: str) -> str:
    from trainer.strategy import choose_strategy

    d = choose_strategy(dataset_size=n_train, pretrained=True, similarity=similarity, total_blocks=17)
    return str(d.strategy)


def run_cell(ds: Dataset, per_class: int, val_dir: Path, pool: dict, similarity: str, args, work: Path) -> dict:
    import numpy as np

    from trainer import TrainConfig, train

    rows = {s: [] for s in STRATEGIES}
    times = {s: [] for s in STRATEGIES}
    undone = {s: 0 for s in STRATEGIES}  # fine-tuning phases that never beat the solved head, so were undone
    n_train = 0
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        chosen = {c: [files[i] for i in rng.permutation(len(files))[: per_class or len(files)]] for c, files in pool.items()}
        n_train = sum(len(v) for v in chosen.values())
        train_dir = link_folder(work / f"{ds.name}-{per_class}-{seed}", chosen)
        for strategy in STRATEGIES:
            cfg = TrainConfig(
                data_dir=train_dir, val_dir=val_dir, backbone="mobilenet_v2", alpha=0.35, image_size=args.size,
                weights="imagenet", similarity=similarity, strategy=int(strategy[0]),
                cut_block=CUT_BLOCK if strategy == "3-cut" else None, epochs=args.epochs, patience=args.patience,
                out_dir=work / "runs", name=f"{ds.name}-{per_class}-{seed}-{strategy}", seed=seed,
                # The study compares the strategies' float accuracy. The int8 probe (~17 s a run) only steers a
                # frozen-base head toward int8 robustness at some float accuracy, which would tilt the table.
                int8_aware=False,
            )
            t = time.perf_counter()
            report = train(cfg, log=lambda m: None).report
            times[strategy].append(time.perf_counter() - t)
            rows[strategy].append(report["metrics"]["val_accuracy"])
            undone[strategy] += sum(1 for p in report["phases"] if p.get("kept") is False)
            shutil.rmtree(work / "runs" / cfg.name, ignore_errors=True)
            print(f"  {ds.name} {per_class or 'all'}/class seed {seed} strategy {strategy}: "
                  f"{rows[strategy][-1]:.3f} in {times[strategy][-1]:.0f} s", flush=True)
    mean = {s: float(np.mean(v)) for s, v in rows.items()}
    spread = {s: float(np.max(v) - np.min(v)) for s, v in rows.items()}
    best = max(mean, key=mean.get)
    pick = rule_choice(n_train, similarity)  # n_train: one seed's training set (every seed draws the same count)
    gap = 100 * (mean[best] - mean[pick])
    tolerance = max(1.0, 100 * max(spread[best], spread[pick]))
    return {"dataset": ds.name, "per_class": per_class or "all", "train_images": n_train,
            "similarity": similarity, "accuracy": mean, "spread": spread, "seconds": {s: float(np.mean(v)) for s, v in times.items()},
            "rule": pick, "best": best, "fine_tuning_undone": undone, "gap_points": round(gap, 2), "within": gap <= tolerance}


def markdown(cells: list[dict], sims: dict) -> str:
    head = "| dataset (similarity) | per class | train images | " + " | ".join(f"strategy {s}" for s in STRATEGIES) + " | rule | best | gap |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cells:
        sim = sims[c["dataset"]]
        accs = " | ".join(f"{100 * c['accuracy'][s]:.1f} ±{100 * c['spread'][s] / 2:.1f} ({c['seconds'][s]:.0f} s)" for s in STRATEGIES)
        mark = "✓" if c["within"] else "✗"
        lines.append(f"| {c['dataset']} ({sim['label']} {sim['score']:.2f}) | {c['per_class']} | {c['train_images']} | {accs} | "
                     f"{c['rule']} | {c['best']} | {c['gap_points']:+.1f} {mark} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 small openclipart_objects cell, 1 seed, 1 epoch, 64 px (for the test)")
    ap.add_argument("--size", type=int, default=96, help="training input size (the similarity probe runs at 224)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="+", help="dataset names to run")
    ap.add_argument("--per-class", type=int, nargs="+", help="cell sizes (images per class) instead of each dataset's own")
    ap.add_argument("--json", type=Path, help="write the cells as JSON here")
    ap.add_argument("--table", type=Path, nargs="+", help="print the table of earlier --json files (runs split across processes)")
    args = ap.parse_args(argv)
    if args.table:
        saved = [json.loads(p.read_text()) for p in args.table]
        print(markdown([c for s in saved for c in s["cells"]], {k: v for s in saved for k, v in s["similarity"].items()}))
        return 0
    datasets = DATASETS
    if args.quick:
        datasets, args.size, args.epochs, args.seeds = QUICK, 64, 1, [0]
    if args.only:
        datasets = tuple(d for d in datasets if d.name in args.only)
    if args.per_class:
        datasets = tuple(Dataset(d.name, tuple(args.per_class), d.val_per_class) for d in datasets)
    seed_keras_home()
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    cells, sims = [], {}
    with tempfile.TemporaryDirectory(prefix="quadrant-study-") as tmp:
        work = Path(tmp)
        for ds in datasets:
            root = SHARED / "datasets" / ds.name
            if not root.is_dir():
                print(f"skip {ds.name}: not at {root}")
                continue
            sim = measure_similarity(root, args.size)
            sims[ds.name] = {"score": sim.score, "label": sim.label}
            print(f"== {ds.name}: similarity {sim.score:.3f} -> {sim.label}", flush=True)
            val, pool = split_files(root, ds.val_per_class)
            val_dir = link_folder(work / f"{ds.name}-val", val)
            for per_class in ds.sizes:
                cells.append(run_cell(ds, per_class, val_dir, pool, sim.label, args, work))
                if args.json:  # as it goes: a long study that dies keeps what it measured
                    args.json.write_text(json.dumps({"cells": cells, "similarity": sims}, indent=1))
    print()
    print(markdown(cells, sims))
    minutes = (time.perf_counter() - started) / 60
    met = all(c["within"] for c in cells)
    print(f"\n{len(cells)} cells, seeds {args.seeds}, {args.size} px, {args.epochs} epochs (patience {args.patience}), "
          f"{minutes:.1f} min. Goal (rule within 1 point or the seed spread of the best, every cell): "
          f"{'MET' if met else 'NOT MET'}")
    if args.json:
        args.json.write_text(json.dumps({"cells": cells, "similarity": sims, "args": {k: str(v) for k, v in vars(args).items()},
                                         "minutes": minutes}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
