"""Transfer learning on real ImageNet weights and real images (../shared): the imagenet path
through Keras' cache, the similarity score, the decisions the quadrant study backs, the Tux Paint
quadrant-4 run against a logistic regression, and exports of a transferred model.

Skipped with a one-line reason where ../shared/weights or ../shared/datasets is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import HAVE_IMAGENET, KERAS_HOME, SHARED_DATASETS, needs_datasets, needs_imagenet
from trainer import TrainConfig, train
from trainer.backbones import build_base_with_info, get_backbone

QUIET = dict(log=lambda m: None)
SPEC = get_backbone("mobilenet_v2")
PROBE_IMAGES = 64  # per set: enough for stable channel statistics, cheap at 224 px


@needs_imagenet
def test_imagenet_loads_the_real_weights_through_keras_cache():
    import h5py

    base, loaded = build_base_with_info(SPEC, 224, 0.35, "imagenet")
    assert loaded.resolution == 224 and loaded.note is None
    with h5py.File(KERAS_HOME / "models" / loaded.checkpoint) as f:  # the legacy layout Keras' loader reads
        stored = np.asarray(f["bn_Conv1"]["bn_Conv1"]["moving_variance"])
    np.testing.assert_allclose(np.asarray(base.get_layer("bn_Conv1").moving_variance), stored)
    assert float(np.abs(stored - 1).max()) > 0.1  # real statistics, not a fresh layer's ones


@needs_imagenet
def test_a_size_without_its_own_cached_checkpoint_uses_the_cached_one_and_says_so():
    base, loaded = build_base_with_info(SPEC, 96, 0.35, "imagenet")  # Keras would want the 96 px file
    assert loaded.resolution == 224 and "96 px" in loaded.note and "224 px" in loaded.note
    ref, _ = build_base_with_info(SPEC, 224, 0.35, "imagenet")
    for a, b in zip(base.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)


def _pixels(name: str, size: int, n: int = PROBE_IMAGES) -> np.ndarray:
    from trainer.data import load_pixels, scan_folder

    root = SHARED_DATASETS / name
    items = [(str(p), 0) for p in sorted(root.rglob("*")) if p.suffix.lower() in (".jpg", ".png")] if name == "package_photos" \
        else scan_folder(root)[1]
    pick = np.random.default_rng(0).permutation(len(items))[:n]
    return load_pixels([items[i] for i in pick], size)[0]


@pytest.fixture(scope="module")
def similarity_scores():
    from trainer.similarity import estimate_similarity

    if not HAVE_IMAGENET or not SHARED_DATASETS.is_dir():
        pytest.skip("needs ../shared/weights and ../shared/datasets")
    base, _ = build_base_with_info(SPEC, 224, 0.35, "imagenet")
    rng = np.random.default_rng(0)
    sets = {name: _pixels(name, 224) for name in ("package_photos", "tuxpaint_objects", "opencv_digits", "font_digits")}
    sets["flat grey"] = np.repeat(np.linspace(20, 235, PROBE_IMAGES).astype(np.uint8)[:, None, None, None], 224, 1).repeat(224, 2).repeat(3, 3)
    sets["noise"] = rng.integers(0, 256, (PROBE_IMAGES, 224, 224, 3), dtype=np.uint8)
    return {k: estimate_similarity(base, SPEC, v, alpha=0.35, **QUIET) for k, v in sets.items()}


def test_similarity_orders_the_shared_sets_as_a_person_would(similarity_scores):
    s = {k: r.score for k, r in similarity_scores.items()}
    assert s["package_photos"] > s["tuxpaint_objects"] > max(s["opencv_digits"], s["font_digits"]), s
    assert min(s["opencv_digits"], s["font_digits"]) > max(s["flat grey"], s["noise"]), s
    # It does not saturate: every far domain keeps a distinct, non-zero value.
    far = sorted([s["opencv_digits"], s["font_digits"], s["flat grey"], s["noise"]])
    assert far[0] > 0.02 and all(b - a > 0.01 for a, b in zip(far, far[1:])), s


def test_similarity_labels_follow_the_calibrated_threshold(similarity_scores):
    r = similarity_scores["tuxpaint_objects"]
    assert r.calibrated and r.threshold == 0.70 and r.probe_size == 224
    labels = {k: v.label for k, v in similarity_scores.items()}
    assert labels == {"package_photos": "high", "tuxpaint_objects": "high", "opencv_digits": "low", "font_digits": "low",
                      "flat grey": "low", "noise": "low"}, labels


def test_similarity_ignores_dead_channels_and_one_outlier_layer(similarity_scores):
    from trainer.similarity import combine, layer_divergence

    r = similarity_scores["tuxpaint_objects"]
    assert sum(p["dead_channels"] for p in r.per_layer) > 0  # the real weights have them
    assert len(r.per_layer) == 52 and sum(p["trimmed"] for p in r.per_layer) == 10
    divs = [p["divergence"] for p in r.per_layer]
    one_wild = divs[:-1] + [1e6]
    assert abs(combine(one_wild)[0] - combine(divs)[0]) < 0.02
    # A channel whose stored variance is ~0 (dead) cannot blow up its layer's divergence.
    mu_s, var_s = np.zeros(8), np.ones(8)
    var_s[0] = 4e-36
    mu_d, var_d = np.full(8, 0.1), np.ones(8)
    mu_d[0] = 50.0
    div, live, dead = layer_divergence(mu_d, var_d, mu_s, var_s, 1e-3)
    assert (live, dead) == (7, 1) and div < 0.05


def test_an_uncalibrated_backbone_says_so():
    from trainer.similarity import calibration_for

    threshold, calibrated, why = calibration_for("resnet50", None, "imagenet")
    assert not calibrated and "uncalibrated" in why
    assert not calibration_for("mobilenet_v2", 0.35, "/some/file.h5")[1]


# --- decisions, as the quadrant study backs them (README: "Transfer learning, measured") ----------


@pytest.mark.parametrize("name, size, expected", [
    ("tuxpaint_objects", 356, (4, 3)),  # small, ImageNet-like: frozen base
    ("opencv_digits", 4000, (1, 1)),  # large, unlike: train everything
    ("font_digits", 3144, (1, 1)),
    ("opencv_digits", 200, (3, 2)),  # small, unlike: deeper fine-tuning
])
def test_decision_for_the_shared_sets_matches_the_study(similarity_scores, name, size, expected):
    from trainer.strategy import choose_strategy

    r = similarity_scores[name]
    d = choose_strategy(dataset_size=size, pretrained=True, similarity=r.label, similarity_score=r.score,
                        similarity_threshold=r.threshold, total_blocks=17)
    assert (d.quadrant, d.strategy) == expected, d.summary()


@needs_imagenet
@needs_datasets
def test_quadrant_4_on_tux_paint_reaches_a_logistic_regression_on_the_same_features(tmp_path):
    from sklearn.linear_model import LogisticRegression

    from trainer.data import Split, load_pixels

    result = train(TrainConfig(data_dir=SHARED_DATASETS / "tuxpaint_objects", alpha=0.35, image_size=224,
                               weights="imagenet", out_dir=tmp_path, name="tux", seed=0), **QUIET)
    report = result.report
    assert (report["quadrant"], report["strategy"]) == (4, 3)
    assert report["decision"]["class_weights"] == "balanced" and report["imbalance_ratio"] > 3
    assert any("class weights" in r for r in report["decision"]["reasons"])
    detail = report["similarity_detail"]
    assert detail["calibrated"] and detail["threshold"] == 0.70 and len(detail["per_layer"]) == 52
    # The baseline: scikit-learn's logistic regression (defaults) on the frozen features of the same split.
    import keras

    model = keras.models.load_model(result.run_dir / "model.keras")
    features = keras.Model(model.inputs, model.get_layer("pool").output)
    split = Split.load(result.run_dir / "split.json")
    (x_tr, y_tr), (x_va, y_va) = (load_pixels(items, 224) for items in (split.train, split.val))
    f_tr, f_va = (features.predict(x.astype("float32"), verbose=0) for x in (x_tr, x_va))
    # Two plain probes, no augmentation: scikit-learn's defaults, and C by 5-fold CV on standardized features.
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    plain = (LogisticRegression(max_iter=3000).fit(f_tr, y_tr).predict(f_va) == y_va).mean()
    by_cv = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[0.001, 0.01, 0.1, 1, 10], cv=5, max_iter=3000))
    baseline = max(plain, (by_cv.fit(f_tr, y_tr).predict(f_va) == y_va).mean())
    # One image of 91 is allowed for floating-point nondeterminism between runs (oneDNN), so the test
    # pins "at least" without flaking on a tie.
    assert report["metrics"]["val_accuracy"] >= baseline - 1 / len(y_va), (report["metrics"]["val_accuracy"], baseline)
    # The recipe was chosen from a table the report shows: views, class weights and C all searched.
    recipe = report["head_recipe"]
    tried = {(c["views"], c["class_weights"], c["C"]) for c in recipe["candidates"]}
    assert {v for v, _, _ in tried} == {0, 2, 4} and {w for _, w, _ in tried} == {"none", "balanced"}
    assert {c for _, _, c in tried} == {0.001, 0.01, 0.1, 1.0, 10.0} and recipe["grouped_by"] == "source image"


@needs_imagenet
@needs_datasets
def test_quick_study_runs_and_prints_the_table(tmp_path):
    out = tmp_path / "study.json"
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "quadrant_study.py"),
                           "--quick", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| rule | best | gap |" in proc.stdout and "Goal" in proc.stdout
    cells = json.loads(out.read_text())["cells"]
    assert [c["dataset"] for c in cells] == ["openclipart_objects"]
    assert all(set(c["accuracy"]) == {"1", "2", "3", "3-cut"} for c in cells)
    assert [c["rule"] for c in cells] == ["3"]  # small and ImageNet-like


# --- a transferred model exports at every precision --------------------------------------------


@pytest.fixture(scope="module")
def transferred_run(tmp_path_factory):
    """Real weights, real images, a small input: the rule's own choice for Tux Paint (quadrant 4, strategy 3)."""
    if not HAVE_IMAGENET or not SHARED_DATASETS.is_dir():
        pytest.skip("needs ../shared/weights and ../shared/datasets")
    out = tmp_path_factory.mktemp("transfer-runs")
    return train(TrainConfig(data_dir=SHARED_DATASETS / "tuxpaint_objects", alpha=0.35, image_size=96, weights="imagenet",
                             epochs=2, out_dir=out, name="tux96", seed=0), **QUIET)


def test_transferred_run_reports_its_checkpoint(transferred_run):
    assert (transferred_run.report["quadrant"], transferred_run.report["strategy"]) == (4, 3)
    ck = transferred_run.report["weights_checkpoint"]
    assert ck["resolution"] == 224 and "96 px" in ck["note"]
    assert transferred_run.report["similarity_detail"]["probe_size"] == 224


@pytest.mark.parametrize("fmt, precision", [("tflite", "float32"), ("tflite", "float16"), ("tflite", "dynamic"),
                                            ("tflite", "int8"), ("onnx", "float32"), ("onnx", "float16"), ("onnx", "int8")])
def test_transferred_model_exports_and_agrees(transferred_run, tmp_path, fmt, precision):
    from exporter import ExportConfig, export
    from exporter.formats import lookup

    out = tmp_path / f"tux.{fmt}-{precision}"
    floor = lookup(fmt, precision)[1].min_agreement
    result = export(ExportConfig(source=transferred_run.run_dir, format=fmt, precision=precision, out=out,
                                 calibration_size=200, verify_size=91, min_agreement=floor), **QUIET)
    v = result.meta["verification"]
    assert v["top1_agreement"] >= floor, v
    # int8 may lose at most two images of accuracy (2.2 points: on 91 images one image is 1.1, so the goal's one
    # point cannot be pinned without pinning zero).
    assert v["exported_accuracy"] >= v["reference_accuracy"] - (2 / v["images"] + 1e-9 if precision == "int8" else 0.03), v
    assert v["changed"]["count"] == round((1 - v["top1_agreement"]) * v["images"]), v
    # The int8 goal is 97% agreement (two of the 91 answers may change). It is not reached on every CPU: the same
    # seeded run fits another head on another CPU (on the Xeon: C=10, no class weights), and this split's int8 files
    # agreed on 98.9% (TFLite and ONNX) on an AMD EPYC, on 96.7% (TFLite, float islands) and 95.6% (ONNX) on an
    # Intel Xeon with AMX; over all 447 images (5-fold CV, benchmarks/int8_head_study.py) all-int8 agrees on
    # 94-97% at 96 px. Reported as an expected failure with the figure until the export reaches it everywhere
    # (docs/training.md, "int8 of a transferred model").
    if precision == "int8" and v["top1_agreement"] < 0.97:
        pytest.xfail(f"int8 goal not reached on this CPU: {fmt} agrees on {v['top1_agreement']:.1%} of "
                     f"{v['images']} images (goal 97%; published at the {floor:.0%} floor)")


def test_cut_block_truncates_the_base_at_a_block_boundary():
    from trainer.backbones import block_index, build_base, count_blocks, truncate

    base = build_base(SPEC, 64, 0.35, None)
    cut = truncate(SPEC, base, 13)
    assert cut.output_shape[-1] < base.output_shape[-1]
    assert max(block_index(SPEC, cut.layers)) == 13 == count_blocks(SPEC, cut.layers)
    with pytest.raises(Exception, match="cut-block must be between 1 and 17"):
        truncate(SPEC, base, 18)


# --- --weights auto (what the demo uses) -----------------------------------------------------------


def test_weights_auto_without_a_cached_checkpoint_trains_from_scratch_and_says_so(monkeypatch, tmp_path):
    from trainer import pretrained
    from trainer.fit import resolve_weights

    monkeypatch.setattr(pretrained, "keras_cache_dir", lambda: tmp_path)  # an empty cache
    lines = []
    cfg = TrainConfig(data_dir=tmp_path, alpha=0.35, weights="auto")
    assert resolve_weights(cfg, SPEC, lines.append) is None
    assert len(lines) == 1 and "training from scratch" in lines[0] and str(tmp_path) in lines[0]


@needs_imagenet
def test_weights_auto_with_a_cached_checkpoint_runs_the_quadrant_rule(small_demo_dir, tmp_path):
    lines = []
    report = train(TrainConfig(data_dir=small_demo_dir, alpha=0.35, image_size=32, weights="auto", epochs=1,
                               out_dir=tmp_path, name="auto"), log=lines.append).report
    assert report["weights"] == "imagenet" and report["quadrant"] in (3, 4)
    text = "\n".join(lines)
    assert "similarity: score" in text and "decision: strategy" in text and "quadrant" in text


@pytest.mark.parametrize("n_classes", [2, 3])
def test_solved_head_folds_its_floored_scaler_and_stays_tame_on_near_constant_features(n_classes):
    from trainer.head_recipe import Recipe, fit_recipe

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), 40)
    x = rng.normal(size=(len(y), 20)) + y[:, None]
    x[:, 0] = 1e-5 * rng.normal(size=len(y))  # near-constant: unfloored, its folded weight would be ~1e5
    W, b = fit_recipe(x, y, n_classes, Recipe(views=0, class_weights="none", C=1.0))
    assert W.shape == (20, 1 if n_classes == 2 else n_classes)
    logits = x @ W + b
    pred = (logits[:, 0] > 0).astype(int) if n_classes == 2 else logits.argmax(1)
    assert (pred == y).mean() > 0.9 and np.abs(W).max() < 100
