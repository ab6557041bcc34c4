"""What to export: a trainer run folder, or any .keras classifier plus a labels file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edge_server.bundle import sha256_file

from .errors import ExportError


@dataclass
class ModelSource:
    model_path: Path
    labels: list[str]
    run_dir: Path | None = None
    report: dict = field(default_factory=dict)
    split: dict | None = None  # the run's train/val file lists

    @property
    def name(self) -> str:
        return self.report.get("name") or (self.run_dir.name if self.run_dir else self.model_path.stem)

    def sha256(self) -> str:
        return sha256_file(self.model_path)

    def load_model(self):
        import keras

        try:
            # safe_mode: a .keras file from elsewhere cannot run arbitrary code (lambdas) on load.
            return keras.models.load_model(self.model_path, compile=False, safe_mode=True)
        except Exception as e:
            raise ExportError(f"Could not load the Keras model {self.model_path}: {str(e).splitlines()[0]}") from None


def read_labels(path: Path) -> list[str]:
    labels = [l.strip() for l in Path(path).read_text().splitlines() if l.strip()]
    if not labels:
        raise ExportError(f"Expected one label per line in {path}. Received: an empty file")
    return labels


def resolve_source(path: str | Path, labels: str | Path | None = None) -> ModelSource:
    path = Path(path)
    if path.is_dir():
        model = path / "model.keras"
        if not model.is_file():
            raise ExportError(f"Expected a run folder with model.keras, or a .keras file. Received: {str(path)!r} (no model.keras)")
        labels_path = Path(labels) if labels else path / "labels.txt"
        report = json.loads((path / "report.json").read_text()) if (path / "report.json").is_file() else {}
        split = json.loads((path / "split.json").read_text()) if (path / "split.json").is_file() else None
        if not labels_path.is_file():
            raise ExportError(f"Expected labels.txt in the run folder or --labels FILE. Received: {str(path)!r} without labels")
        return ModelSource(model, read_labels(labels_path), path, report, split)
    if path.is_file() and path.suffix == ".keras":
        if labels is None:
            raise ExportError(f"A bare .keras model needs --labels FILE (one class name per line). Received: {path.name} without labels")
        return ModelSource(path, read_labels(Path(labels)))
    raise ExportError(f"Expected a trainer run folder or a .keras file. Received: {str(path)!r}")
