"""`edgeport predict` over many images: collect the files, classify each, summarise, write.

Plain functions; edge_server/cli.py's `cmd_predict` only wires flags to them.
An image's class is the name of the folder it sits in when that name is one of
the model's labels (the trainer's layout: one subfolder per class); where
images have one, accuracy and a confusion summary follow the table.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edge_core.errors import EdgeError, RequestError
from edge_core.imageio import ALLOWED_FORMATS, sniff_image
from edge_core.progress import asked_progress

# What a folder walk takes by name; any other file is taken when its first bytes are an image's.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp"}
GLOB_CHARS = set("*?[")
# A progress bar on a terminal from this many images on: fewer finish before a bar says anything.
PROGRESS_MIN = 20
# Up to this many classes the confusion summary is a matrix; beyond, the most-confused pairs.
MATRIX_MAX_CLASSES = 10
MOST_CONFUSED = 5


@dataclass
class Item:
    path: Path
    expected: str | None = None  # the class folder's name, when it is one of the model's labels


@dataclass
class Result:
    item: Item
    predictions: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def label(self) -> str | None:
        return self.predictions[0]["label"] if self.predictions else None


def looks_like_image(path: Path) -> bool:
    """By name, else by its first bytes (a camera's extension-less dump, a .dat)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return sniff_image(head) in ALLOWED_FORMATS


def _walk(root: Path) -> list[Path]:
    """Images under `root`, recursively, in a stable order. Hidden files and folders are skipped:
    macOS's ._NAME.jpg companions carry an image's name but no image."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [p for name in sorted(files) if not name.startswith(".") and looks_like_image(p := Path(folder) / name)]
    return found


def collect(arguments: list, labels: list[str]) -> tuple[list[Item], list[str]]:
    """Files (taken whatever their name), folders (walked) and glob patterns (expanded here too, for a
    quoted pattern or a shell that leaves one unmatched) -> the images once each, and one error line
    per argument that names nothing."""
    known = set(labels)
    items: list[Item] = []
    problems: list[str] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            items.append(Item(path, path.parent.name if path.parent.name in known else None))

    for arg in map(str, arguments):
        path = Path(arg)
        if path.is_dir():
            found = _walk(path)
            if not found:
                problems.append(f"{arg}: error: Expected images (JPEG, PNG, WebP or BMP) in this folder. Received: none")
            for p in found:
                add(p)
        elif path.exists() or not GLOB_CHARS & set(arg):
            add(path)  # a missing file is read, and reported, like an unreadable one
        else:
            matches = sorted(glob.glob(arg, recursive=True))
            files = [p for m in matches for p in (_walk(Path(m)) if Path(m).is_dir() else [Path(m)] if looks_like_image(Path(m)) else [])]
            if not files:
                problems.append(f"{arg}: error: Expected images matching this pattern. Received: "
                                f"{'no match' if not matches else f'{len(matches)} match(es), none an image'}")
            for p in files:
                add(p)
    return items, problems


def classify(svc, items: list[Item], top_k: int, on_result=None, progress: bool = False) -> list[Result]:
    """Each image through the service (decoded as the server decodes it); a file that cannot be read or
    decoded is a Result with an error, and the rest go on."""
    results = []
    bar = _progress_bar(items) if progress else None
    for item in bar if bar is not None else items:
        try:
            preds, timings = svc.predict_bytes(item.path.read_bytes(), top_k)
            result = Result(item, preds, timings)
        except OSError as e:
            result = Result(item, error=f"cannot read ({e.strerror})")
        except RequestError as e:
            result = Result(item, error=e.message)
        results.append(result)
        if on_result is not None:
            on_result(result, bar)
    return results


def _progress_bar(items):
    """tqdm's bar on stderr; none where tqdm is absent (a device installed from a deploy folder's pinned
    requirements has what `serve` needs, and the bar is a convenience)."""
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        return None
    return tqdm(items, desc="predict", unit="img", file=sys.stderr, leave=False)


def summarise(results: list[Result]) -> dict:
    """Counts, and for the images whose folder names a class: accuracy and the confusion between classes."""
    out = {"images": len(results), "errors": sum(r.error is not None for r in results)}
    labelled = [r for r in results if r.item.expected is not None and r.error is None]
    if not labelled:
        return out
    correct = sum(r.label == r.item.expected for r in labelled)
    pairs = Counter((r.item.expected, r.label) for r in labelled)
    rows = sorted({r.item.expected for r in labelled})  # the classes whose folders were given
    columns = sorted(set(rows) | {r.label for r in labelled})  # and any other class the model answered
    confused = sorted(((n, e, p) for (e, p), n in pairs.items() if e != p), key=lambda t: (-t[0], t[1], t[2]))
    out |= {
        "labelled": len(labelled), "correct": correct, "accuracy": correct / len(labelled),
        # matrix[i][j]: images in the folder of class rows[i] that the model called columns[j]
        "confusion": {"rows": rows, "columns": columns, "matrix": [[pairs.get((e, p), 0) for p in columns] for e in rows]},
        "most_confused": [{"expected": e, "predicted": p, "count": n} for n, e, p in confused[:MOST_CONFUSED]],
    }
    return out


def summary_text(summary: dict) -> str:
    errors = f"; {summary['errors']} could not be read" if summary["errors"] else ""
    if "accuracy" not in summary:
        return f"{summary['images']} image(s){errors}"
    lines = [f"accuracy {100 * summary['accuracy']:.1f}% ({summary['correct']}/{summary['labelled']} images in class folders; "
             f"{summary['images']} in all{errors})"]
    conf = summary["confusion"]
    small = len(conf["columns"]) <= MATRIX_MAX_CLASSES
    if small:
        lines.append("confusion (rows: the folder's class, columns: predicted)")
        rows = [["", *conf["columns"]]] + [[c, *map(str, row)] for c, row in zip(conf["rows"], conf["matrix"])]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    if summary["most_confused"]:
        lines.append("most confused: " + ", ".join(f"{m['expected']} -> {m['predicted']} {m['count']}" for m in summary["most_confused"]))
    elif not small:
        lines.append("no image was confused")
    return "\n".join(lines)


class Table:
    """The terminal's table, a row as each image is done: image, top-1 label and score, the folder's
    class when it names one, and the next guesses compact."""

    def __init__(self, items: list[Item], labels: list[str]):
        self.image_w = max([len("image"), *(len(str(i.path)) for i in items)])
        self.label_w = max([len("label"), *map(len, labels)])
        self.labelled = any(i.expected is not None for i in items)

    def header(self) -> str:
        cols = ["image".ljust(self.image_w), "label".ljust(self.label_w), "score "]
        if self.labelled:
            cols.append("folder".ljust(self.label_w + 3))  # a row's folder cell carries " ok" / " x"
        return "  ".join([*cols, "next"]).rstrip()

    def row(self, r: Result) -> str:
        image = str(r.item.path).ljust(self.image_w)
        if r.error is not None:  # the message itself is on stderr, as a line of its own
            return f"{image}  error"
        top = r.predictions[0]
        cols = [image, top["label"].ljust(self.label_w), f"{top['score']:.4f}"]
        if self.labelled:
            mark = "" if r.item.expected is None else " ok" if r.item.expected == top["label"] else " x"
            cols.append(((r.item.expected or "-") + mark).ljust(self.label_w + 3))
        cols.append(", ".join(f"{p['label']} {p['score']:.4f}" for p in r.predictions[1:]))
        return "  ".join(cols).rstrip()


def json_record(r: Result) -> dict:
    rec: dict = {"image": str(r.item.path)}
    if r.item.expected is not None:
        rec["expected"] = r.item.expected
    return rec | ({"error": r.error} if r.error is not None else {"predictions": r.predictions, "timings_ms": r.timings})


def csv_header(top_k: int) -> list[str]:
    return ["image", "expected", "label", "score",
            *(c for k in range(2, top_k + 1) for c in (f"label_{k}", f"score_{k}")), "error"]


def csv_row(r: Result, top_k: int) -> list:
    ranked = [v for p in r.predictions for v in (p["label"], f"{p['score']:.6f}")]
    ranked += [""] * (2 * top_k - len(ranked))
    return [str(r.item.path), r.item.expected or "", *ranked[:2 * top_k], r.error or ""]


class Output:
    """Where a machine-readable stream goes: stdout for "-", else a file that appears whole when done
    (written beside its destination under a hidden name, then renamed), never half-written."""

    def __init__(self, target: str):
        self.target = target
        if target == "-":
            self.stream, self.tmp = sys.stdout, None
        else:
            dest = Path(target)
            self.tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
            try:
                self.stream = open(self.tmp, "w", newline="", encoding="utf-8")
            except OSError as e:
                raise EdgeError(f"Expected a writable folder for {target}. Received: {dest.parent} ({e.strerror})") from None

    def finish(self) -> None:
        if self.tmp is None:
            self.stream.flush()
            return
        self.stream.close()
        os.replace(self.tmp, self.target)

    def abandon(self) -> None:
        if self.tmp is not None:
            self.stream.close()
            self.tmp.unlink(missing_ok=True)


def check_outputs(json_to: str | None, csv_to: str | None, items: list[Item]) -> None:
    """Refuse, before anything runs, an output that would overwrite an input or a folder, or two streams on stdout.
    `--json` takes an optional file name, so `--json a.jpg b.jpg` would read a.jpg as the output."""
    if json_to == "-" and csv_to == "-":
        raise EdgeError("Expected at most one of --json and --csv on stdout (-). Received: both; give the other a file name")
    inputs = {i.path.resolve() for i in items}
    for flag, target in (("--json", json_to), ("--csv", csv_to)):
        if target is None or target == "-":
            continue
        path = Path(target)
        if path.suffix.lower() in IMAGE_SUFFIXES or path.resolve() in inputs or path.is_dir():
            what = "a folder" if path.is_dir() else "an image"
            raise EdgeError(f"Expected {flag} FILE (an output file) or {flag} - (stdout). Received: {target!r}, {what}: "
                            f"put {flag} after the images, or name a file such as predictions.{'jsonl' if flag == '--json' else 'csv'}")
        if not path.parent.is_dir():
            raise EdgeError(f"Expected {flag} FILE in an existing folder. Received: {target!r} ({path.parent} does not exist)")


def run(svc, arguments: list, top_k: int = 3, json_to: str | None = None, csv_to: str | None = None,
        out=None, err=None, progress: bool | None = None) -> int:
    """Classify every image the arguments name and write the table, JSON lines and/or CSV; 0, or 2 when
    any argument or image failed (the others are still classified and written)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if top_k < 1:
        raise EdgeError(f"Expected --top-k of 1 or more. Received: {top_k}")
    items, problems = collect(arguments, svc.labels)
    for line in problems:
        print(line, file=err)
    if not items:
        raise EdgeError(f"Expected image files, folders of images or glob patterns. Received: no image in {[str(a) for a in arguments]}")
    check_outputs(json_to, csv_to, items)
    table = Table(items, svc.labels) if "-" not in (json_to, csv_to) else None
    # The summary follows the table; when stdout carries JSON or CSV it goes to stderr, out of the data.
    summary_to = out if table is not None else err
    if progress is None:  # --progress / EDGEPORT_PROGRESS decide; else a terminal and enough images
        progress = asked_progress()
    if progress is None:
        progress = len(items) >= PROGRESS_MIN and err.isatty()
    outputs: dict[str, Output] = {}
    writer = None

    def emit(r: Result, bar) -> None:
        if r.error is not None:
            say(f"{r.item.path}: error: {r.error}", err, bar)
        if table is not None:
            say(table.row(r), out, bar)
        if "json" in outputs:
            say(json.dumps(json_record(r)), outputs["json"].stream, bar)
        if writer:
            writer.writerow(csv_row(r, top_k))

    try:
        for flag, target in (("json", json_to), ("csv", csv_to)):
            if target is not None:
                outputs[flag] = Output(target)
        if "csv" in outputs:
            writer = csv.writer(outputs["csv"].stream)
            writer.writerow(csv_header(top_k))
        if table is not None:
            print(table.header(), file=out)
        results = classify(svc, items, top_k, emit, progress)
        # One image's row says all there is; a summary line would only repeat it (and a one-image
        # --json is one line, what scripts that read a single answer expect).
        summary = summarise(results) if len(results) > 1 else {"images": 1, "errors": int(results[0].error is not None)}
        if "json" in outputs and "accuracy" in summary:
            print(json.dumps({"summary": summary}), file=outputs["json"].stream)
        for o in outputs.values():
            o.finish()
    except BaseException:  # an interrupted run leaves no half-written file
        for o in outputs.values():
            o.abandon()
        raise
    if len(results) > 1:
        print(summary_text(summary), file=summary_to)
    for flag, target in ((f, t) for f, t in (("json", json_to), ("csv", csv_to)) if t not in (None, "-")):
        print(f"wrote {len(results)} {flag.upper()} record(s) to {target}", file=err)
    return 2 if problems or summary["errors"] else 0


def say(line: str, stream, bar) -> None:
    """A line that does not tear the progress bar: tqdm clears it, prints, and draws it again."""
    if bar is not None and getattr(stream, "isatty", lambda: False)():
        bar.write(line, file=stream)
    else:
        print(line, file=stream)
