"""split.json, the run folder's list of the images it was trained and validated on, found wherever it runs.

Each part (train, val) names its data folder twice: as an absolute path, and relative to the run folder;
its images are stored relative to that folder. So the run's images are found from any working directory,
and after the run folder and the data folder are moved together. The trainer writes this file (through
`split_json`); the exporter reads it. Files without "roots" store paths as they were given to the trainer
(relative to the working directory it ran in) and are read that way.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ExportError

SPLIT_FORMAT = 2
PARTS = ("train", "val")


def _absolute(path: str | Path) -> Path:
    # abspath, not resolve(): a data folder of symlinks (the quadrant study links its files) keeps its own paths.
    return Path(os.path.abspath(path))


def split_json(class_names: list[str], parts: dict[str, list], roots: dict[str, str | Path], skipped: list, run_dir: Path) -> dict:
    """The file's contents: each part's images relative to its root; the root absolute and from `run_dir`.

    `run_dir` is where split.json is written, or a sibling of its final place (a staging folder): the
    relative root is the same from both."""
    out: dict = {"format": SPLIT_FORMAT, "class_names": class_names, "roots": {}}
    run_dir = _absolute(run_dir)
    for part in PARTS:
        files = [_absolute(p) for p, _ in parts[part]]
        # A split made without its roots (by hand): the folder its images share.
        root = _absolute(roots[part]) if roots.get(part) else Path(os.path.commonpath([f.parent for f in files] or [run_dir]))
        out["roots"][part] = {"absolute": str(root), "from_run_folder": os.path.relpath(root, run_dir)}
        out[part] = [(os.path.relpath(f, root), int(label)) for f, (_, label) in zip(files, parts[part])]
    out["skipped"] = [(str(_absolute(p)), why) for p, why in skipped]
    return out


def _by_class_folder(path: str, class_name: str) -> str | None:
    """The part of a stored path from its class folder on (data/circle/a.png -> circle/a.png)."""
    parts = Path(path).parts
    idx = [i for i, p in enumerate(parts[:-1]) if p == class_name]
    return str(Path(*parts[idx[-1]:])) if idx else None


def part_items(split: dict, part: str, run_dir: Path, data: Path | None = None) -> list[tuple[str, int]] | None:
    """[(absolute image path, label)] of one part of the run's split.json, or None where it lists none.

    The data folder is the first of `data` (the --data override), the absolute root and the root relative
    to the run folder that holds the part's first image; where none does, one line names the folders tried."""
    items = split.get(part) or []
    if not items:
        return None
    root_info = (split.get("roots") or {}).get(part)
    names = split.get("class_names") or []
    if root_info is None:  # the first format: paths as given to the trainer, relative to its working directory
        if data is not None:
            rel = [(_by_class_folder(p, names[int(l)]) if 0 <= int(l) < len(names) else None, int(l)) for p, l in items]
            if all(r is not None for r, _ in rel):
                return [(str(_absolute(Path(data) / r)), l) for r, l in rel]
            return [(str(_absolute(p)), int(l)) for p, l in items]
        first = Path(items[0][0])
        if not first.is_file():
            raise ExportError(
                f"Expected the run's images at the paths in split.json, relative to the folder the run was trained in. "
                f"Received: no file {str(first)!r} from {os.getcwd()}; run from that folder or pass --data DIR "
                "(the data folder, one subfolder per class)")
        return [(str(_absolute(p)), int(l)) for p, l in items]
    candidates = [Path(root_info["absolute"]), Path(run_dir) / root_info["from_run_folder"]]
    # --data names the training folder; a separate validation folder (train --val-dir) is not it.
    if data is not None and (part == "train" or root_info == split["roots"].get("train")):
        candidates.insert(0, Path(data))
    first = items[0][0]
    root = next((c for c in candidates if (c / first).is_file()), None)
    if root is None:
        tried = " or ".join(dict.fromkeys(str(_absolute(c)) for c in candidates))
        found = "no such folder" if not any(c.is_dir() for c in candidates) else f"no {first} there"
        raise ExportError(f"Expected the run's {'training' if part == 'train' else 'validation'} images under {tried} "
                          f"(from split.json). Received: {found}; pass --data DIR (the data folder, one subfolder per class)"
                          + (" or --images DIR" if part == "val" else " or --calibration DIR"))
    root = _absolute(root)
    return [(str(root / p), int(l)) for p, l in items]
