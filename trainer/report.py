"""The run report: the report dict (what was decided, trained and measured), report.json and its plots."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def build_report(*, name: str, cfg, size: int, weights: str | None, loaded, split, decision, sim, model, metrics: dict,
                 head_info: dict, runner, decode_seconds: float, started: float) -> dict:
    """Everything report.json holds; `started` is the run's perf_counter start, for the total time."""
    from .freezing import layer_counts

    return {
        "name": name,
        "backbone": cfg.backbone,
        "alpha": cfg.alpha,
        "image_size": size,
        "weights": weights or "none",
        "weights_checkpoint": {"file": loaded.checkpoint, "resolution": loaded.resolution, "note": loaded.note},
        "head": cfg.head,
        "dataset_size": len(split.train),
        "validation_size": len(split.val),
        "class_names": split.class_names,
        "class_counts": {"train": split.counts("train"), "val": split.counts("val")},
        "imbalance_ratio": round(split.imbalance_ratio(), 3),
        "skipped_files": split.skipped,
        "similarity": decision.similarity,
        "similarity_score": decision.similarity_score,
        "similarity_detail": sim.to_dict() if sim else None,
        "quadrant": decision.quadrant,
        "strategy": decision.strategy,
        "decision": decision.to_dict(),
        **layer_counts(model),
        "metrics": {**metrics, **head_info, "val_loss_best": min(runner.history.get("val_loss", [float("nan")]))},
        "history": runner.history,
        "phases": runner.phases,
        "head_recipe": runner.head_recipe.to_dict() if runner.head_recipe else None,
        "int8_expectation": runner.int8_expectation,
        "timings_s": {"decode": round(decode_seconds, 2), "total": round(time.perf_counter() - started, 2)},
        "config": cfg.to_dict(),
        "versions": _versions(),
    }


def _versions() -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    return {"python": sys.version.split()[0], "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}


def write_report(run_dir: Path, report: dict, log=print) -> None:
    (Path(run_dir) / "report.json").write_text(json.dumps(report, indent=2, default=str))
    try:
        _plots(Path(run_dir), report)
    except ImportError:
        log("note: matplotlib is not installed; report.json written without plots")


def _plots(run_dir: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a build server
    import matplotlib.pyplot as plt
    import numpy as np

    hist = report.get("history") or {}
    if hist.get("loss"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key in zip(axes, ("loss", "accuracy")):
            ax.plot(hist.get(key, []), label=f"train {key}")
            ax.plot(hist.get(f"val_{key}", []), label=f"validation {key}")
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.legend()
        fig.suptitle(f"{report['name']}: strategy {report['strategy']}")
        fig.tight_layout()
        fig.savefig(run_dir / "history.png", dpi=80)
        plt.close(fig)

    cm = np.array(report["metrics"]["confusion_matrix"])
    names = report["class_names"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(names), 1.0 + 0.6 * len(names)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="black")
    ax.set_title(f"validation accuracy {report['metrics']['val_accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(run_dir / "confusion_matrix.png", dpi=80)
    plt.close(fig)


def closing_lines(report: dict, run_dir: Path) -> list[str]:
    """What the data got, said at the end of a run: strategy, head recipe, and the int8 export to expect."""
    lines = [f"strategy {report['strategy']} (quadrant {report['quadrant']}); validation accuracy "
             f"{report['metrics']['val_accuracy']:.3f}"]
    if report.get("head_recipe"):
        chosen = report["head_recipe"]["chosen"]
        from .head_recipe import Recipe

        lines.append(f"head recipe: {Recipe(**chosen).describe()}, chosen from {len(report['head_recipe']['candidates'])} "
                     f"candidates (table: {run_dir / 'report.json'}, \"head_recipe\")")
    expect = report.get("int8_expectation")
    if expect:
        from exporter.formats import lookup

        floor = lookup("tflite", "int8")[1].min_agreement
        agree = expect["validation_agreement"]
        # The probe is all-int8 without the export's per-layer bias correction (trainer/int8_probe.py): the
        # export, which corrects every layer and may keep early ops in float, measured 0-8 points more on the shared sets.
        verdict = (f"the export corrects every layer's bias and measures its own figure: edgeport export {run_dir} "
                   f"--device raspberry-pi-4" + ("" if agree >= floor else
                   f"; should it be refused under its {floor:.0%} floor, float16 keeps the answers: "
                   f"edgeport export {run_dir} --format tflite --precision float16"))
        lines.append(f"int8: all-int8 before bias correction agrees on {agree:.1%} of the validation images (accuracy "
                     f"{expect['validation_accuracy_float']:.1%} -> {expect['validation_accuracy_int8']:.1%}); {verdict}")
    return lines
