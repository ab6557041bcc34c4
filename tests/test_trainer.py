"""Trainer: freezing per strategy, heads, SVM folding, similarity, data handling, errors, distribution."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from trainer import TrainConfig, TrainerError, train
from trainer.backbones import BACKBONES, block_index, build_base, count_blocks, get_backbone
from trainer.data import make_split

QUIET = dict(log=lambda m: None)


# --- strategies freeze exactly what they say -------------------------------------------


def weighted(layers):
    return [l for l in layers if l.weights]


def test_strategy_freezing_counts_mobilenet_v2():
    import keras

    from trainer.freezing import set_trainable

    spec = get_backbone("mobilenet_v2")
    base = build_base(spec, 64, 0.35, None)
    total = count_blocks(spec, base.layers)
    assert total == 17  # expanded_conv + block_1..block_16

    set_trainable(base, spec, 0)  # strategy 3
    assert base.trainable_weights == []

    set_trainable(base, spec, total)  # strategy 1: everything, batch norm included
    assert len(base.trainable_weights) == sum(len(l.trainable_weights) for l in base.layers) > 0
    assert all(l.trainable for l in weighted(base.layers))

    set_trainable(base, spec, 3)  # strategy 2: top 3 blocks; batch norm stays frozen
    top = ("block_14_", "block_15_", "block_16_", "Conv_1")
    trainable = {l.name for l in weighted(base.layers) if l.trainable_weights}
    expected = {l.name for l in weighted(base.layers) if l.name.startswith(top) and not isinstance(l, keras.layers.BatchNormalization)}
    assert trainable == expected and expected
    n_expected = sum(len(base.get_layer(n).weights) for n in expected)
    assert len(base.trainable_weights) == n_expected


@pytest.mark.parametrize("name, blocks", [("mobilenet_v3_small", 11), ("mobilenet_v3_large", 15), ("resnet50", 16)])
def test_every_backbone_groups_layers_into_whole_blocks(name, blocks):
    spec = BACKBONES[name]
    base = build_base(spec, 64, None, None)
    idx = block_index(spec, base.layers)
    assert max(idx) == blocks
    assert idx == sorted(idx), "blocks are contiguous in graph order"


def test_frozen_batch_norm_runs_in_inference_mode():
    import keras

    from trainer.freezing import set_trainable

    spec = get_backbone("mobilenet_v2")
    base = build_base(spec, 32, 0.35, None)
    set_trainable(base, spec, 2)
    bn = [l for l in base.layers if isinstance(l, keras.layers.BatchNormalization)][-1]
    before = np.array(bn.moving_mean)
    base(np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32"), training=True)
    assert np.array_equal(before, np.array(bn.moving_mean))


# --- heads -------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["gap", "fc", "svm"])
def test_each_head_trains_and_beats_chance(head, small_demo_dir, pretrained_backbone, tmp_path):
    cfg = TrainConfig(data_dir=small_demo_dir, backbone="mobilenet_v2", alpha=0.35, image_size=64,
                      weights=str(pretrained_backbone), similarity="high", head=head, epochs=15,
                      out_dir=tmp_path, name=head, augment=(head == "gap"), augment_views=2)
    result = train(cfg, **QUIET)
    report = result.report
    assert (report["quadrant"], report["strategy"]) == (4, 3)  # small and similar: head only
    assert report["metrics"]["val_accuracy"] >= 0.6, report["metrics"]
    phases = {p["phase"]: p for p in report["phases"]}
    assert "feature extraction" in phases  # strategy 3 fits on cached features
    if head == "gap":  # augmentation on: the original plus 2 cached augmented views
        assert phases["feature extraction"]["views"] == 3
    if head == "svm":
        assert report["metrics"]["svm_C"] > 0
    assert report["trainable_layers"] >= 1 and report["frozen_layers"] > 50


@pytest.mark.parametrize("n_classes", [2, 4])
def test_svm_dense_layer_reproduces_decision_function(n_classes):
    from trainer.heads import fit_linear_svm, svm_head

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), 30)
    x = rng.normal(size=(len(y), 16)) * rng.uniform(0.1, 10, 16) + y[:, None] * rng.normal(size=16) + 5
    W, b, C, _, pipeline = fit_linear_svm(x, y, **QUIET)
    head = svm_head(W, b, n_classes)
    dense = head.get_layer("svm_decision")
    got = np.asarray(dense(x.astype("float32")))
    want = pipeline.decision_function(x).reshape(len(x), -1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_strategy_2_trains_in_two_phases(small_demo_dir, pretrained_backbone, tmp_path):
    cfg = TrainConfig(data_dir=small_demo_dir, backbone="mobilenet_v2", alpha=0.35, image_size=64,
                      weights=str(pretrained_backbone), similarity="high", strategy=2, unfreeze_blocks=2,
                      epochs=1, fine_tune_epochs=1, out_dir=tmp_path, name="s2")
    report = train(cfg, **QUIET).report
    phases = [p["phase"] for p in report["phases"]]
    # The head is solved on the frozen base's cached features, then the top blocks fine-tune.
    assert phases == ["feature extraction", "head (logistic regression on cached features)", "fine-tune top 2 blocks"]
    from trainer.strategy import LR_HEAD

    assert report["phases"][-1]["learning_rate"] < LR_HEAD
    assert any("--strategy" in r for r in report["decision"]["reasons"])


# --- similarity ----------------------------------------------------------------------------


def test_auto_similarity_ranks_same_kind_above_clearly_different_kinds(pretrained_backbone, small_demo_dir):
    from trainer.data import load_pixels, scan_folder
    from trainer.similarity import estimate_similarity

    spec = get_backbone("mobilenet_v2")
    base = build_base(spec, 64, 0.35, str(pretrained_backbone))
    _, items, _ = scan_folder(small_demo_dir)
    x, _ = load_pixels(items[::2], 64)
    rng = np.random.default_rng(0)
    checker = ((np.indices((64, 64)).sum(0) // 2) % 2 * 255).astype(np.uint8)
    kinds = {
        "same kind": x,
        "noise": rng.integers(0, 256, x.shape, dtype=np.uint8),
        "flat grey": np.full_like(x, 128),
        "checkerboard": np.repeat(np.broadcast_to(checker[None, ..., None], (len(x), 64, 64, 1)), 3, axis=3),
        "inverted": 255 - x,
    }
    scores = {k: estimate_similarity(base, spec, v, **QUIET).score for k, v in kinds.items()}
    for other in ("noise", "flat grey", "checkerboard"):
        assert scores["same kind"] > scores[other] + 0.2, scores
    # The demo's colours are uniformly random, so inverting them gives the same distribution:
    # for this backbone inversion is no domain shift, and the measure rightly says so.
    # (For natural images under ImageNet weights, inversion is a shift.)
    assert abs(scores["inverted"] - scores["same kind"]) < 0.05, scores


def test_auto_similarity_is_reported(small_demo_dir, pretrained_backbone, tmp_path):
    cfg = TrainConfig(data_dir=small_demo_dir, backbone="mobilenet_v2", alpha=0.35, image_size=64,
                      weights=str(pretrained_backbone), similarity="auto", epochs=1, out_dir=tmp_path, name="auto")
    report = train(cfg, **QUIET).report
    assert 0 < report["similarity_score"] <= 1 and report["similarity"] in ("high", "low")
    assert report["quadrant"] in (3, 4)


# --- data ------------------------------------------------------------------------------------


def test_same_seed_same_split(small_demo_dir):
    a, b, c = (make_split(small_demo_dir, seed=s) for s in (1, 1, 2))
    assert a.train == b.train and a.val == b.val
    assert a.val != c.val
    assert a.counts("val") == {"circle": 12, "square": 12, "triangle": 12}  # stratified


def test_same_seed_same_model(small_demo_dir, tmp_path):
    """On one machine a seed reproduces the model bit for bit, augmentation included: its random layers
    once raced on their seed state in a parallel map, and the demo model differed from run to run."""
    import keras

    def trained(name):
        cfg = TrainConfig(data_dir=small_demo_dir, backbone="mobilenet_v2", alpha=0.35, image_size=32, weights=None,
                          augment=True, epochs=1, batch_size=16, seed=0, out_dir=tmp_path, name=name)
        run = train(cfg, **QUIET)
        return run.report, keras.models.load_model(run.run_dir / "model.keras").get_weights()

    (report, a), (_, b) = trained("a"), trained("b")
    assert report["decision"]["augment"] and len(report["history"]["loss"]) == 1  # the augmented path, trained
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_bad_files_are_skipped_with_one_warning(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "b" / "notes.txt").write_text("hello")
    split = make_split(tmp_path, seed=0)
    assert sorted(os.path.basename(p) for p, _ in split.skipped) == ["broken.jpg", "notes.txt"]
    assert len(split.train) + len(split.val) == 6
    logs = []
    with pytest.raises(TrainerError):  # stop right after the data step: the weights file is missing
        train(TrainConfig(data_dir=tmp_path, weights=str(tmp_path / "missing.h5"), image_size=32, alpha=0.35), log=logs.append)
    warnings = [m for m in logs if m.startswith("warning: skipped")]
    assert len(warnings) == 1 and "broken.jpg" in warnings[0] and "notes.txt" in warnings[0]


def test_separate_validation_folder(small_demo_dir, tmp_path):
    split = make_split(small_demo_dir, val_dir=small_demo_dir)
    assert len(split.val) == len(split.train) == 180


def test_imbalance_is_reported(tmp_path):
    for cls, n in (("a", 12), ("b", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / cls / f"{i}.png")
    split = make_split(tmp_path, val_fraction=0.25)
    assert split.imbalance_ratio() >= 3


# --- errors: one line naming expected and received, non-zero exit -----------------------------


def cli(*argv, env=None):
    out = subprocess.run([sys.executable, "-m", "edge_server.cli", *argv], capture_output=True, text=True,
                         timeout=300, env={**os.environ, **(env or {})})
    return out.returncode, out.stderr.strip().splitlines()


@pytest.fixture
def one_class(tmp_path):
    (tmp_path / "only").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "x.png")
    return tmp_path


def test_error_messages(tmp_path, one_class, small_demo_dir, capsys):
    from edge_server.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([str(empty)], "no readable images"),
        ([str(one_class)], "at least 2 classes"),
        ([str(small_demo_dir), "--backbone", "mobilenetv9"], "backbone='mobilenetv9'"),
        ([str(small_demo_dir), "--image-size", "16", "--weights", "none"], "image_size=16"),
        ([str(small_demo_dir), "--alpha", "0.6", "--weights", "none"], "alpha=0.6"),
        ([str(tmp_path / "nope")], "not a folder"),
    ]
    for argv, match in cases:
        code = main(["train", *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, argv
        assert len(err) == 1 and match in err[0] and "Received" in err[0], err


def test_error_lines_are_single_and_say_received(tmp_path, one_class):
    code, lines = cli("train", str(one_class))
    assert code == 2 and len(lines) == 1 and "Received" in lines[0] and "Traceback" not in lines[0], lines


def test_offline_imagenet_says_how_to_proceed(small_demo_dir, tmp_path):
    code, lines = cli("train", str(small_demo_dir), "--image-size", "32", "--alpha", "0.35",
                      env={"KERAS_HOME": str(tmp_path / "keras")})
    assert code == 2
    assert "--weights none" in lines[-1] and "weights='imagenet'" in lines[-1], lines


# --- scale-out ---------------------------------------------------------------------------------

DIST_SCRIPT = textwrap.dedent(
    """
    import sys, tensorflow as tf
    if sys.argv[4] == "mirrored":  # two logical CPUs in one process; multi-worker: one CPU per worker
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from trainer import TrainConfig, train
    r = train(TrainConfig(data_dir=sys.argv[1], out_dir=sys.argv[2], name=sys.argv[3], backbone="mobilenet_v2",
                          alpha=0.35, image_size=32, weights=None, epochs=1, batch_size=16, distribute=sys.argv[4]))
    print("RUN_DIR", r.run_dir)
    """
)


def test_mirrored_strategy_on_two_logical_cpus(small_demo_dir, tmp_path):
    out = subprocess.run([sys.executable, "-c", DIST_SCRIPT, str(small_demo_dir), str(tmp_path), "m", "mirrored"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mirrored (MirroredStrategy) with 2 replicas" in out.stdout
    assert (tmp_path / "m" / "model.keras").is_file()


def test_multi_worker_through_tf_config(small_demo_dir, tmp_path):
    from conftest import free_port

    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DIST_SCRIPT, str(small_demo_dir), str(tmp_path), "mw", "multi_worker"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})},
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-2000:]
    assert "multi_worker (CollectiveAllReduceStrategy) with 2 replicas" in outs[0][0]  # two workers, one CPU each
    assert (tmp_path / "mw" / "model.keras").is_file()  # the chief wrote it
    assert "RUN_DIR None" in outs[1][0]  # the other worker did not
