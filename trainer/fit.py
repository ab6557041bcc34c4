"""`train(config)`: data -> quadrant decision -> the strategy's phases -> evaluation -> run folder."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data as data_mod
from .backbones import build_base_with_info, count_blocks, get_backbone, truncate
from .config import TrainConfig
from .distributed import distribution, is_chief
from .errors import TrainerError
from .evaluation import evaluate
from .heads import HEADS, assemble, build_head
from .phases import phases_for
from .report import build_report, closing_lines
from .run_folder import check_writable, write_run_folder
from .runner import PhaseRunner
from .strategy import Decision, choose_strategy

# Training from scratch: Keras' MobileNet batch-norm momentum (0.999) needs
# thousands of steps before the moving statistics mean anything, so a short
# run validates at chance. 0.9 converges within a few epochs.
SCRATCH_BN_MOMENTUM = 0.9


@dataclass
class RunResult:
    run_dir: Path | None  # None on a multi-worker non-chief
    decision: Decision
    report: dict


def _log(msg: str) -> None:
    print(msg, flush=True)


def train(cfg: TrainConfig, log=_log) -> RunResult:
    """Train a classifier as the config says; return where the run folder is and what was decided."""
    started = time.perf_counter()
    spec = get_backbone(cfg.backbone)
    size = cfg.image_size or spec.default_size
    spec.check_size(size)
    spec.check_alpha(cfg.alpha)
    if cfg.head not in HEADS:
        raise TrainerError(f"Unknown head; expected one of {list(HEADS)}. Received: head={cfg.head!r}")

    check_writable(cfg.out_dir)  # before an hour of training, not after
    split = data_mod.make_split(cfg.data_dir, cfg.val_dir, cfg.val_fraction, cfg.seed)
    if split.skipped:
        listing = "\n".join(f"  {p}: {why}" for p, why in split.skipped)
        log(f"warning: skipped {len(split.skipped)} file(s) that are not readable images:\n{listing}")
    counts = split.counts("train")
    log(f"data: {len(split.train)} training / {len(split.val)} validation images in {len(split.class_names)} classes {counts}")
    if split.imbalance_ratio() >= 3:
        log(f"warning: classes are imbalanced: the largest has {split.imbalance_ratio():.1f}x the images of the smallest")

    import keras

    # The distribution strategy first: MultiWorkerMirroredStrategy must exist before other TF ops.
    dist = distribution(cfg.distribute)
    if cfg.distribute:
        log(f"distribution: {cfg.distribute} ({type(dist).__name__}) with {dist.num_replicas_in_sync} replicas")
    keras.utils.set_random_seed(cfg.seed)
    weights = resolve_weights(cfg, spec, log)
    with dist.scope():
        # The backbone before the pixels: a bad --weights fails in seconds, not after decoding.
        base, loaded = build_base_with_info(spec, size, cfg.alpha, weights)
    if loaded.note:
        log(f"note: {loaded.note}")
    full_base = base  # the similarity probe reads every batch-norm layer's statistics, cut or not
    if cfg.cut_block:
        base = truncate(spec, base, cfg.cut_block)
        log(f"backbone cut after block {cfg.cut_block}: {base.output_shape[-1]} features")
    t = time.perf_counter()
    xs = (data_mod.load_pixels(split.train, size, log), data_mod.load_pixels(split.val, size, log))
    decode_seconds = time.perf_counter() - t

    with dist.scope():
        pretrained = weights is not None
        if not pretrained:
            for layer in base.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = SCRATCH_BN_MOMENTUM
        sim = _similarity(cfg, weights, loaded, full_base, spec, split.train, size, xs[0][0], log)
        decision = choose_strategy(
            dataset_size=len(split.train), pretrained=pretrained,
            similarity=sim.label if sim else (cfg.similarity if pretrained else None),
            similarity_score=sim.score if sim else None, similarity_threshold=sim.threshold if sim else None,
            imbalance_ratio=split.imbalance_ratio(), class_weights=cfg.class_weights,
            total_blocks=count_blocks(spec, base.layers), small_threshold=cfg.small_threshold,
            strategy=cfg.strategy, unfreeze_blocks=cfg.unfreeze_blocks, augment=cfg.augment,
        )
        log("decision: " + decision.summary())
        n_classes = len(split.class_names)
        head = build_head(cfg.head, base.output_shape[-1], n_classes, cfg.dropout)
        model, features = assemble(spec, base, head, size)
        runner = PhaseRunner(cfg, spec, base, head, model, features, decision, xs, n_classes, log)
        runner.run(phases_for(decision))
        model, head_info = runner.finish_head()

    metrics = evaluate(model, xs[1][0], xs[1][1], n_classes, split.class_names)
    log(f"validation accuracy: {metrics['val_accuracy']:.3f}")

    if not is_chief(cfg.distribute):
        log("multi-worker: this worker is not the chief; the chief writes the run folder")
        return RunResult(None, decision, {"metrics": metrics})
    name = cfg.name or time.strftime(f"{cfg.backbone}-%Y%m%d-%H%M%S")

    def make_report() -> dict:
        return build_report(name=name, cfg=cfg, size=size, weights=weights, loaded=loaded, split=split, decision=decision,
                            sim=sim, model=model, metrics=metrics, head_info=head_info, runner=runner,
                            decode_seconds=decode_seconds, started=started)

    dest, report = write_run_folder(cfg.out_dir, name, model, split, make_report, log)
    log(f"run saved: {dest}")
    for line in closing_lines(report, dest):
        log(line)
    return RunResult(dest, decision, report)


def resolve_weights(cfg: TrainConfig, spec, log) -> str | None:
    """`--weights auto`: ImageNet when Keras' cache has it, else from scratch, said in one line."""
    if cfg.weights != "auto":
        return cfg.weights
    from .pretrained import imagenet_available, keras_cache_dir

    if imagenet_available(spec, cfg.alpha):
        return "imagenet"
    log(f"weights: no ImageNet checkpoint for {spec.name} alpha={cfg.alpha} in Keras' cache ({keras_cache_dir()}); "
        "training from scratch")
    return None


def _similarity(cfg: TrainConfig, weights, loaded, base, spec, train_items, size: int, x_train, log):
    """The SimilarityResult when it is estimated; None when given or not applicable.

    The probe runs at the resolution the checkpoint's batch-norm statistics were gathered at
    (the score moves with resolution: README), decoding a sample of the training files at that
    size; for weights of unknown origin, at the training size.
    """
    if weights is None:
        if cfg.similarity != "auto":
            log(f"note: --similarity {cfg.similarity} has no effect without pretrained weights")
        return None
    if cfg.similarity != "auto":
        return None
    from .similarity import MAX_IMAGES, calibration_for, estimate_similarity

    probe_size = loaded.resolution or size
    x = x_train
    if probe_size != size:
        rng = np.random.default_rng(cfg.seed)
        sample = [train_items[i] for i in rng.permutation(len(train_items))[:MAX_IMAGES]]
        x, _ = data_mod.load_pixels(sample, probe_size)
    threshold, calibrated, calibration = calibration_for(spec.name, cfg.alpha, weights)
    return estimate_similarity(base, spec, x, threshold=threshold, calibrated=calibrated, calibration=calibration,
                               alpha=cfg.alpha, seed=cfg.seed, log=log)
