"""Strategy 3 with feature caching vs the naive fit through the frozen base.

Same data, same epochs, same seed, one process. Prints the fit-time ratio
(naive / cached) and both validation accuracies. Goal: cached >= 5x faster
at equal accuracy (within 2 points).

    .venv/bin/python benchmarks/bench_feature_cache.py            # trains a stand-in backbone first (~2 min)
    .venv/bin/python benchmarks/bench_feature_cache.py --weights runs/shapes/model.keras

No ImageNet weights can be downloaded here, so the "pretrained" backbone is a
MobileNetV2 trained on the demo shapes; the comparison runs on a different,
small demo set (quadrant 4: small and similar -> strategy 3).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import TrainConfig, train  # noqa: E402
from trainer.demo_data import DemoDataConfig, generate  # noqa: E402


def phase_seconds(report: dict) -> float:
    return sum(p["seconds"] for p in report["phases"])


def compare(title: str, data: Path, runs: Path, weights, alpha: float, size: int, epochs: int, augment: bool) -> dict:
    """One scenario: the same training twice, naive then cached; returns both results."""
    quiet = dict(log=lambda m: None)
    results = {}
    print(f"\n== {title}: MobileNetV2 alpha {alpha}, {size} px, {epochs} epochs, augmentation {'on' if augment else 'off'}")
    for label, cached in (("naive", False), ("cached", True)):
        cfg = TrainConfig(data_dir=data, backbone="mobilenet_v2", alpha=alpha, image_size=size, weights=weights,
                          similarity="high", strategy=3, head="gap", epochs=epochs, patience=epochs, augment=augment,
                          out_dir=runs, name=f"{label}-{size}", seed=0, extra={"cache_features": cached})
        t = time.perf_counter()
        report = train(cfg, **quiet).report
        r = results[label] = {"fit_s": phase_seconds(report), "total_s": time.perf_counter() - t,
                              "val_accuracy": report["metrics"]["val_accuracy"]}
        print(f"{label:>6}: fit {r['fit_s']:7.2f} s  (whole run {r['total_s']:6.2f} s)  val accuracy {r['val_accuracy']:.3f}", flush=True)
    naive, cached = results["naive"], results["cached"]
    speedup = naive["fit_s"] / cached["fit_s"]
    gap = 100 * (cached["val_accuracy"] - naive["val_accuracy"])
    ok = speedup >= 5 and abs(gap) <= 2
    print(f"fit-time ratio naive/cached: {speedup:.1f}x (goal >= 5x); whole-run ratio {naive['total_s'] / cached['total_s']:.1f}x; "
          f"accuracy {cached['val_accuracy']:.3f} vs {naive['val_accuracy']:.3f} ({gap:+.1f} points, goal within 2) -> "
          f"{'GOAL MET' if ok else 'GOAL NOT MET'}")
    return {"speedup": speedup, "gap_points": gap, "ok": ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="a .keras demo classifier (alpha 0.35, 64 px) whose backbone to use (default: train one here)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--augment", action="store_true", help="compare with augmentation on (cached: fixed augmented views)")
    ap.add_argument("--quick", action="store_true", help="only the small stand-in scenario")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = args.weights
        if weights is None:
            print("training a stand-in backbone on demo shapes (no ImageNet weights offline) ...", flush=True)
            generate(DemoDataConfig(tmp / "pretrain", classes=3, per_class=1000, size=64))
            run = train(TrainConfig(data_dir=tmp / "pretrain", backbone="mobilenet_v2", alpha=0.35, image_size=64,
                                    weights=None, epochs=12, augment=True, out_dir=tmp / "runs", name="backbone"),
                        log=lambda m: None)
            weights = str(run.run_dir / "model.keras")
        generate(DemoDataConfig(tmp / "data64", classes=3, per_class=200, size=64, seed=2024))
        compare("A. trained stand-in backbone (tiny: the base costs little, fixed costs weigh most)",
                tmp / "data64", tmp / "runs", weights, 0.35, 64, args.epochs, args.augment)
        if not args.quick:
            # A real deployment backbone. Untrained weights: the speed is what it would be with
            # ImageNet weights; accuracy is only compared between the two paths.
            generate(DemoDataConfig(tmp / "data224", classes=3, per_class=100, size=224, seed=2024))
            compare("B. deployment-size backbone (untrained weights: speed is real, accuracy only compared)",
                    tmp / "data224", tmp / "runs", None, 1.0, 224, args.epochs, args.augment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
