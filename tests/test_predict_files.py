"""`edgeport predict` over many images: files, folders and globs; the table, JSON lines, CSV; accuracy where folders name classes."""

import csv
import io
import json
import shutil

import pytest

from edge_server.cli import main
from edge_server.predict_files import Item, Result, collect, summarise, summary_text

LABELS = ["circle", "square", "triangle"]


def jpeg(path, rgb=(200, 30, 30)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), rgb).save(path, "JPEG")
    return path


def test_collect_walks_folders_expands_globs_and_names_what_it_could_not(tmp_path):
    jpeg(tmp_path / "a" / "circle" / "1.jpg")
    jpeg(tmp_path / "a" / "circle" / "deeper" / "2.jpeg")
    (tmp_path / "a" / "square").mkdir()
    shutil.copy(tmp_path / "a" / "circle" / "1.jpg", tmp_path / "a" / "square" / "camera-dump")  # an image by its bytes
    (tmp_path / "a" / "square" / "labels.txt").write_text("not an image")
    (tmp_path / "a" / "square" / "._3.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS's companion file
    (tmp_path / "a" / ".thumbs").mkdir()
    jpeg(tmp_path / "a" / ".thumbs" / "4.jpg")
    jpeg(tmp_path / "b" / "5.png")
    (tmp_path / "empty").mkdir()

    items, problems = collect([tmp_path / "a", tmp_path / "a" / "circle" / "1.jpg", str(tmp_path / "b" / "*.png"),
                               str(tmp_path / "none-*.jpg"), tmp_path / "missing.jpg", tmp_path / "empty"], LABELS)
    got = [(str(i.path.relative_to(tmp_path)), i.expected) for i in items]
    assert got == [("a/circle/1.jpg", "circle"), ("a/circle/deeper/2.jpeg", None), ("a/square/camera-dump", "square"),
                   ("b/5.png", None), ("missing.jpg", None)]  # the same file once; a missing one is read and reported
    assert problems == [f"{tmp_path}/none-*.jpg: error: Expected images matching this pattern. Received: no match",
                        f"{tmp_path}/empty: error: Expected images (JPEG, PNG, WebP or BMP) in this folder. Received: none"]


def test_a_recursive_glob_crosses_folders(tmp_path):
    for name in ("circle/x/1.jpg", "square/2.jpg", "square/3.txt"):
        (jpeg(tmp_path / name) if name.endswith(".jpg") else (tmp_path / name).write_text("notes"))
    items, problems = collect([f"{tmp_path}/**/*"], LABELS)
    assert [i.path.relative_to(tmp_path).as_posix() for i in items] == ["circle/x/1.jpg", "square/2.jpg"] and not problems
    assert [i.expected for i in items] == [None, "square"]


def result(expected, label, error=None):
    preds = [] if error else [{"label": label, "index": LABELS.index(label), "score": 0.9}]
    return Result(Item(None, expected), preds, {}, error)


def test_summary_counts_accuracy_and_the_most_confused_pairs():
    results = [result("circle", "circle"), result("circle", "square"), result("square", "circle"), result("square", "circle"),
               result("triangle", "triangle"), result(None, "square"), result("circle", None, error="cannot read")]
    s = summarise(results)
    assert (s["images"], s["errors"], s["labelled"], s["correct"]) == (7, 1, 5, 2) and s["accuracy"] == 0.4
    assert s["confusion"] == {"rows": LABELS, "columns": LABELS, "matrix": [[1, 1, 0], [2, 0, 0], [0, 0, 1]]}
    assert s["most_confused"][0] == {"expected": "square", "predicted": "circle", "count": 2}
    text = summary_text(s)
    assert text.startswith("accuracy 40.0% (2/5 images in class folders; 7 in all; 1 could not be read)")
    assert "most confused: square -> circle 2, circle -> square 1" in text


def test_more_than_ten_classes_give_the_pairs_not_a_matrix():
    many = [f"c{i:02d}" for i in range(12)]
    results = [Result(Item(None, c), [{"label": many[(i + 1) % 12], "index": 0, "score": 1.0}]) for i, c in enumerate(many)]
    text = summary_text(summarise(results))
    assert "confusion (rows" not in text and "most confused: c00 -> c01 1" in text


def test_predict_on_a_labelled_folder_prints_table_and_accuracy_and_writes_json_and_csv(int8_bundle, heldout_dir, tmp_path, capsys):
    code = main(["predict", str(int8_bundle), str(heldout_dir), "--top-k", "2",
                 "--json", str(tmp_path / "out.jsonl"), "--csv", str(tmp_path / "out.csv")])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["image", "label", "score", "folder", "next"]
    rows = [l for l in lines if l.startswith(str(heldout_dir))]
    assert len(rows) == 180 and all(l.split()[3] in LABELS for l in rows)
    accuracy_line = next(l for l in lines if l.startswith("accuracy"))
    assert "images in class folders; 180 in all" in accuracy_line and "confusion (rows: the folder's class" in out

    records = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    images, summary = records[:-1], records[-1]["summary"]
    assert len(images) == 180 and all(len(r["predictions"]) == 2 and r["expected"] in LABELS for r in images)
    correct = sum(r["predictions"][0]["label"] == r["expected"] for r in images)
    assert summary["correct"] == correct and summary["accuracy"] == correct / 180 > 0.9
    assert f"accuracy {100 * summary['accuracy']:.1f}% ({correct}/180" in accuracy_line
    assert sum(map(sum, summary["confusion"]["matrix"])) == 180

    table = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert list(table[0]) == ["image", "expected", "label", "score", "label_2", "score_2", "error"]
    assert [(r["image"], r["label"]) for r in table] == [(r["image"], r["predictions"][0]["label"]) for r in images]
    assert "wrote 180 JSON record(s)" in err and "wrote 180 CSV record(s)" in err


def test_predict_json_on_stdout_keeps_the_data_apart_from_the_summary(int8_bundle, heldout_dir, capsys):
    code = main(["predict", str(int8_bundle), f"{heldout_dir}/*/*_000[0-4].jpg", "--json"])  # a quoted glob; bare --json: stdout
    out, err = capsys.readouterr()
    assert code == 0, err
    records = [json.loads(l) for l in out.splitlines()]  # every stdout line is JSON: no table
    assert len(records) == 16 and records[-1]["summary"]["labelled"] == 15
    assert err.startswith("accuracy")


def test_predict_on_a_nested_folder_with_a_bad_image_goes_on_and_exits_2(int8_bundle, heldout_dir, tmp_path, capsys):
    nested = tmp_path / "shoot" / "day1" / "square"
    nested.mkdir(parents=True)
    for image in sorted((heldout_dir / "square").glob("*.jpg"))[:3]:
        shutil.copy(image, nested / image.name)
    (nested / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    code = main(["predict", str(int8_bundle), str(tmp_path / "shoot"), "--csv", "-"])
    out, err = capsys.readouterr()
    assert code == 2
    table = list(csv.DictReader(io.StringIO(out)))
    assert len(table) == 4 and [r["expected"] for r in table] == ["square"] * 4
    bad = next(r for r in table if r["image"].endswith("broken.jpg"))
    assert bad["label"] == "" and bad["error"].startswith("Expected")
    assert f"{nested / 'broken.jpg'}: error: Expected" in err and "1 could not be read" in err


def test_one_image_json_stays_one_line(int8_bundle, heldout_dir, capsys):
    image = sorted((heldout_dir / "circle").glob("*.jpg"))[0]
    assert main(["predict", str(int8_bundle), str(image), "--json", "-"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == str(image) and record["expected"] == "circle" and len(record["predictions"]) == 3


@pytest.mark.parametrize("argv, expected", [
    (["--json", "-", "--csv", "-"], "Expected at most one of --json and --csv on stdout"),
    (["--json", "other.jpg"], "put --json after the images"),
])
def test_outputs_that_would_clash_are_refused_before_anything_runs(int8_bundle, heldout_dir, argv, expected, capsys):
    image = sorted((heldout_dir / "circle").glob("*.jpg"))[0]
    assert main(["predict", str(int8_bundle), *argv, str(image)]) == 2
    out, err = capsys.readouterr()
    assert expected in err and out == ""
