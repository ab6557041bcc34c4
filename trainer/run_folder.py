"""The run folder (model.keras, labels.txt, split.json, report.json, plots): checked writable before
training, built under a staging name and published by edge_core.atomic only when complete, so an
interrupted run never leaves a folder that looks finished."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from edge_core.atomic import publish_dir, recover_interrupted, staging_path

from .errors import TrainerError


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise TrainerError(f"Expected a writable output folder. Received: out_dir={str(out_dir)!r} ({e.strerror or e})") from None


def write_run_folder(out_dir: Path, name: str, model, split, make_report: Callable[[], dict], log) -> tuple[Path, dict]:
    """Save the model, labels, split and report under a staging name, then publish it as out_dir/name.

    `make_report` runs after the model is saved, so the report's total time includes saving."""
    # Looked up at call time: tests replace report.write_report to fake a full disk.
    from . import report as report_mod

    dest = out_dir / name
    recover_interrupted(dest)  # what a killed run left: its staging folder, or a previous run set aside
    tmp = staging_path(dest)
    try:
        tmp.mkdir(parents=True)
        model.save(tmp / "model.keras")
        (tmp / "labels.txt").write_text("\n".join(split.class_names) + "\n")
        split.save(tmp / "split.json")
        report = make_report()
        report_mod.write_report(tmp, report, log)
        publish_dir(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainerError(f"Could not write the run folder in {out_dir}: {e.strerror or e}. "
                           f"Expected a writable folder with free space. Received: out_dir={str(out_dir)!r}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest, report
