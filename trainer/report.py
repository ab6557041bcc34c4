"""The run report: report.json plus loss/accuracy and confusion-matrix plots."""

from __future__ import annotations

import json
from pathlib import Path


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
