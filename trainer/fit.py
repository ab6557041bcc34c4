"""`train(config)`: data -> quadrant decision -> fit by strategy -> run folder.

The run folder (model.keras, labels.txt, split.json, report.json, plots) is
built under a temporary name and renamed into place only when complete, so an
interrupted run never leaves a folder that looks finished.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_core.atomic import publish_dir, recover_interrupted, staging_path

from . import data as data_mod
from .backbones import block_index, build_base_with_info, count_blocks, get_backbone, truncate
from .config import TrainConfig
from .errors import TrainerError
from .heads import HEADS, LINEAR_HEADS, assemble, build_head, fit_linear_svm, loss_for, svm_head
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


def _keras_verbose() -> int:
    return 1 if sys.stdout.isatty() else 2  # 2: one line per epoch in logs and CI


def augmenter(seed: int):
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.08, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomZoom(0.15, fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
        ],
        name="augment",
    )


def make_dataset(x, y, batch_size: int, *, shuffle: bool, augment: bool, seed: int):
    """Decoded pixels -> batched tf.data pipeline. Augmentation stays outside the model graph."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        aug = augmenter(seed)
        # Sequential on purpose: the random layers draw from one seed-generator variable, and parallel
        # calls race on it, so the same seed trained a different model each run (0.998 and 0.995 val
        # here; one CI run's model had 6 of 540 answers flipped by fast decoding where ours had 2, under
        # tests/test_decode_modes.py's floor). The map works on whole batches, so its ops still use
        # every core: the demo training took 206 s vs 200.
        ds = ds.map(lambda a, b: (aug(a, training=True), b))
    return ds.prefetch(tf.data.AUTOTUNE)


def set_trainable(base, spec, top_blocks: int, keep_bn_frozen: bool = False) -> None:
    """Unfreeze exactly the top `top_blocks` blocks; batch norm stays frozen (inference mode)
    whenever any part of the base is frozen, and with `keep_bn_frozen` (pretrained weights) always:
    in training mode it normalizes by the batch, not by the statistics the pretrained weights
    expect (the quadrant study's full fine-tunes on digits trained at chance while validating at 88%)."""
    import keras

    total = count_blocks(spec, base.layers)
    blocks = block_index(spec, base.layers)
    base.trainable = top_blocks > 0
    if top_blocks <= 0:
        return
    partial = top_blocks < total
    for layer, b in zip(base.layers, blocks):
        trainable = b > total - top_blocks or (not partial)
        if (partial or keep_bn_frozen) and isinstance(layer, keras.layers.BatchNormalization):
            trainable = False
        layer.trainable = trainable


def layer_counts(model) -> dict:
    """Counts over layers that own weights, at every nesting depth."""
    import keras

    trainable = frozen = 0

    def walk(layer, parent_trainable=True):
        nonlocal trainable, frozen
        effective = parent_trainable and layer.trainable
        if isinstance(layer, keras.Model):
            for sub in layer.layers:
                walk(sub, effective)
        elif layer.weights:
            if effective and layer.trainable_weights:
                trainable += 1
            else:
                frozen += 1

    for layer in model.layers:
        walk(layer)
    return {
        "trainable_layers": trainable,
        "frozen_layers": frozen,
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "frozen_params": int(sum(np.prod(w.shape) for w in model.non_trainable_weights)),
    }


class _Trainer:
    """One training run; methods named after the strategy they implement."""

    def __init__(self, cfg: TrainConfig, spec, base, head, model, features, decision, xs, n_classes: int, log):
        self.cfg, self.spec, self.base, self.head = cfg, spec, base, head
        self.model, self.features, self.decision, self.log = model, features, decision, log
        (self.x_tr, self.y_tr), (self.x_va, self.y_va) = xs
        self.n_classes = n_classes
        self.history: dict[str, list] = {}
        self.phases: list[dict] = []
        self.class_weight = balanced_class_weights(self.y_tr, n_classes) if decision.class_weights == "balanced" else None
        self.head_recipe = None  # a RecipeChoice once a linear head is solved on cached features
        self.int8_expectation = None  # what an int8 export of a frozen-base run will do, measured on the validation images

    def _callbacks(self):
        import keras

        return [keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.cfg.patience, restore_best_weights=True)]

    def _compile(self, model, lr):
        import keras

        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss_for(self.n_classes), metrics=["accuracy"])

    def _record(self, phase: str, history: dict, lr: float, seconds: float) -> None:
        for k, v in history.items():
            self.history.setdefault(k, []).extend(float(x) for x in v)
        self.phases.append({"phase": phase, "epochs": len(history.get("loss", [])), "learning_rate": lr, "seconds": round(seconds, 2)})

    def _fit_images(self, phase: str, lr: float, epochs: int, augment: bool, guard: bool = False) -> None:
        """Fit the whole model on images. `guard`: the model already has a fitted head, so a phase
        that never beats the validation loss it started from is undone (early stopping alone
        would keep its best epoch, which can still be worse than where it started)."""
        cfg = self.cfg
        train_ds = make_dataset(self.x_tr, self.y_tr, cfg.batch_size, shuffle=True, augment=augment, seed=cfg.seed)
        val_ds = make_dataset(self.x_va, self.y_va, cfg.batch_size, shuffle=False, augment=False, seed=cfg.seed)
        self.log(f"[{phase}] fitting {layer_counts(self.model)['trainable_params']:,} trainable parameters, lr={lr:g}, up to {epochs} epochs")
        t = time.perf_counter()
        start_loss = start_weights = None
        if cfg.distribute == "multi_worker":
            history = self._distributed_loop(train_ds, lr, epochs)
        else:
            self._compile(self.model, lr)
            if guard:
                start_weights = self.model.get_weights()
                start_loss = float(self.model.evaluate(val_ds, verbose=0)[0])
            # shuffle=False: the tf.data pipeline already reshuffles every epoch.
            history = self.model.fit(train_ds, validation_data=val_ds, epochs=epochs, shuffle=False, class_weight=self.class_weight,
                                     callbacks=self._callbacks(), verbose=_keras_verbose()).history
        kept = True
        if start_loss is not None and min(history.get("val_loss", [np.inf])) >= start_loss:
            self.model.set_weights(start_weights)
            kept = False
            self.log(f"[{phase}] did not improve the validation loss ({start_loss:.4f}); kept the model from before it")
        self._record(phase, history, lr, time.perf_counter() - t)
        self.phases[-1]["kept"] = kept

    def _distributed_loop(self, train_ds, lr: float, epochs: int) -> dict:
        """A plain tf.distribute training loop with early stopping on validation loss.

        Keras 3's fit() does not run under MultiWorkerMirroredStrategy
        (keras-team/keras#20585: PerReplica values reach Keras); strategy.run does.
        Every worker holds the whole validation set and identical weights, so
        each validates locally and all reach the same early-stopping decision.
        """
        import keras
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
        binary = self.n_classes == 2
        loss_fn = (keras.losses.BinaryCrossentropy if binary else keras.losses.SparseCategoricalCrossentropy)(reduction=None)
        optimizer = keras.optimizers.Adam(lr)
        optimizer.build(self.model.trainable_variables)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dist_ds = strategy.experimental_distribute_dataset(train_ds.with_options(options))
        global_batch = self.cfg.batch_size

        cw = tf.constant([self.class_weight[c] for c in range(self.n_classes)] if self.class_weight else [1.0] * self.n_classes, tf.float32)

        def replica_step(x, y):
            weight = tf.gather(cw, tf.cast(y, tf.int32))
            y = tf.cast(tf.reshape(y, (-1, 1)), tf.float32) if binary else y
            with tf.GradientTape() as tape:
                per_example = loss_fn(y, self.model(x, training=True)) * weight
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            grads = tape.gradient(loss, self.model.trainable_variables)
            optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
            return loss

        @tf.function
        def train_step(x, y):
            return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, args=(x, y)), axis=None)

        history: dict[str, list] = {"loss": [], "val_loss": [], "val_accuracy": []}
        best, best_weights, wait = float("inf"), None, 0
        for epoch in range(epochs):
            losses = [float(train_step(x, y)) for x, y in dist_ds]
            probs = predict_batches(self.model, self.x_va)
            y_va = self.y_va
            val_loss = float(np.mean(loss_fn(y_va.reshape(-1, 1).astype(np.float32) if binary else y_va, probs)))
            pred = predicted_labels(probs)
            history["loss"].append(float(np.mean(losses)))
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(float((pred == y_va).mean()))
            self.log(f"epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f} val_loss {val_loss:.4f} "
                     f"val_accuracy {history['val_accuracy'][-1]:.4f}")
            if val_loss < best:
                best, best_weights, wait = val_loss, self.model.get_weights(), 0
            else:
                wait += 1
                if wait >= self.cfg.patience:
                    break
        if best_weights is not None:
            self.model.set_weights(best_weights)
        return history

    def strategy_1(self) -> None:
        pretrained = self.decision.pretrained
        if pretrained:  # linear probe, then fine-tune: a random head's gradients would wreck the pretrained features
            self.strategy_3()
        set_trainable(self.base, self.spec, self.decision.total_blocks, keep_bn_frozen=pretrained)
        self._fit_images("full", self.decision.learning_rates["full"], self.cfg.epochs, self.decision.augment, guard=pretrained)

    def strategy_2(self) -> None:
        self.strategy_3()  # the head first, on the frozen base's cached features
        set_trainable(self.base, self.spec, self.decision.unfreeze_blocks)
        self._fit_images(
            f"fine-tune top {self.decision.unfreeze_blocks} blocks",
            self.decision.learning_rates["fine_tune"],
            self.cfg.fine_tune_epochs or self.cfg.epochs,
            self.decision.augment,
            guard=True,
        )

    def cached_features(self):
        """Run the frozen base once per image, plus `augment_views` augmented copies for a frozen-base run
        (strategy 3), whose head recipe search decides how many of them help."""
        cfg = self.cfg
        t = time.perf_counter()
        self.log(f"[features] extracting features of {len(self.x_tr)} training and {len(self.x_va)} validation images")
        bs = max(cfg.batch_size, 64)
        f_tr = [self.features.predict(self.x_tr.astype(np.float32), batch_size=bs, verbose=0)]
        if self.decision.augment and self.decision.strategy == 3:
            aug = augmenter(cfg.seed)
            for view in range(cfg.augment_views):
                ds = make_dataset(self.x_tr, self.y_tr, bs, shuffle=False, augment=False, seed=cfg.seed)
                views = [self.features.predict_on_batch(aug(a, training=True)) for a, _ in ds]
                f_tr.append(np.concatenate(views))
                self.log(f"[features] augmented view {view + 1}/{cfg.augment_views}")
        f_va = self.features.predict(self.x_va.astype(np.float32), batch_size=bs, verbose=0)
        y_tr = np.concatenate([self.y_tr] * len(f_tr))
        self.phases.append({"phase": "feature extraction", "seconds": round(time.perf_counter() - t, 2), "views": len(f_tr)})
        return np.concatenate(f_tr), y_tr, f_va

    def strategy_3(self) -> None:
        set_trainable(self.base, self.spec, 0)
        if not self.cfg.extra.get("cache_features", True):  # the naive path, kept for the benchmark
            self._fit_images("head (uncached)", self.decision.learning_rates["head"], self.cfg.epochs, self.decision.augment)
            return
        f_tr, y_tr, f_va = self.cached_features()
        if self.cfg.head == "svm" and self.decision.strategy == 3:
            return  # the SVM is fit on features in finish_head
        if self.cfg.head in LINEAR_HEADS:
            self.solve_linear_head(f_tr, y_tr, f_va)
            return
        import tensorflow as tf

        lr = self.decision.learning_rates["head"]
        self._compile(self.head, lr)
        self.log(f"[head] fitting the head on {len(f_tr)} cached feature vectors, lr={lr:g}")
        # tf.data, not numpy arrays: with numpy, Keras rebuilds its data adapters for
        # validation every epoch, which costs more than fitting a head (measured 5x).
        train_ds = (tf.data.Dataset.from_tensor_slices((f_tr, y_tr)).cache()
                    .shuffle(len(f_tr), seed=self.cfg.seed).batch(self.cfg.batch_size).prefetch(2))
        val_ds = tf.data.Dataset.from_tensor_slices((f_va, self.y_va)).batch(256).cache()
        t = time.perf_counter()
        hist = self.head.fit(train_ds, validation_data=val_ds, epochs=self.cfg.epochs, shuffle=False, class_weight=self.class_weight,
                             callbacks=self._callbacks(), verbose=_keras_verbose())
        self._record("head (cached features)", hist.history, lr, time.perf_counter() - t)

    def solve_linear_head(self, f_tr, y_tr, f_va) -> None:
        """The one-Dense-layer head on frozen features: the recipe (augmented views, C, class weights) chosen by
        grouped cross-validation on these features, solved (logistic regression), then loaded.

        A frozen-base run (strategy 3) searches every recipe; before fine-tuning (strategies 1 and 2) the head
        is only a starting point, so it searches C alone, on the original images, with the rule's class weights."""
        from .head_recipe import choose_recipe, fit_recipe

        t = time.perf_counter()
        views = len(f_tr) // len(self.x_tr) - 1
        weighting = self.decision.class_weights
        searching = self.decision.strategy == 3
        view_options = sorted({0, views // 2, views}) if searching else (0,)
        weight_options = ("none", "balanced") if searching and self.cfg.class_weights == "auto" else (weighting,)
        int8 = q_va = None
        if searching and self.cfg.int8_aware and self.decision.pretrained:
            from .int8_probe import int8_features

            (int8, q_va), int8_seconds = int8_features(self.features, self.x_tr, [self.x_tr, self.x_va], seed=self.cfg.seed,
                                                       log=self.log)
        choice = choose_recipe(f_tr, self.y_tr, self.n_classes, views_options=view_options, int8=int8,
                               class_weight_options=weight_options, seed=self.cfg.seed, log=self.log)
        W, b = fit_recipe(f_tr, self.y_tr, self.n_classes, choice.recipe, int8=int8)
        self.head.get_layer("scores").set_weights([W, b])
        self.head_recipe = choice
        pred = predicted_labels(np.asarray(self.head(f_va, training=False)))
        if q_va is not None:
            self.int8_expectation = int8_expectation(self.head, f_tr[: len(self.x_tr)], int8, pred, q_va, self.y_va, int8_seconds)
        self.phases.append({"phase": "head (logistic regression on cached features)", "seconds": round(time.perf_counter() - t, 2),
                            "C": choice.recipe.C, "views": choice.recipe.views, "class_weights": choice.recipe.class_weights,
                            "cv_accuracy": round(choice.cv_accuracy, 4), "val_accuracy": round(float((pred == self.y_va).mean()), 4)})

    def finish_head(self):
        """For the SVM head: fit LinearSVC on the final features and fold it into a Dense layer."""
        if self.cfg.head != "svm":
            return self.model, {}
        t = time.perf_counter()
        f_tr = self.features.predict(self.x_tr.astype(np.float32), batch_size=64, verbose=0)
        W, b, C, cv, _ = fit_linear_svm(f_tr, self.y_tr, seed=self.cfg.seed, log=self.log)
        head = svm_head(W, b, self.n_classes)
        model, self.features = assemble(self.spec, self.base, head, self.x_tr.shape[1])
        self.phases.append({"phase": "svm", "seconds": round(time.perf_counter() - t, 2), "C": C})
        return model, {"svm_C": C, "svm_cv_accuracy": cv}


def int8_expectation(head, f_tr, q_tr, pred_va, q_va, y_va, seconds: float) -> dict:
    """The int8 base + this head on the validation images, against the float model's answers."""
    from .int8_probe import relative_error

    from .head_recipe import bias_shift

    pred_q = predicted_labels(np.asarray(head(q_va - bias_shift(f_tr, q_tr), training=False)))  # as the export corrects it
    return {"runtime": "TFLite int8, calibrated on 200 training images and bias-corrected as the exporter does",
            "validation_agreement": round(float((pred_q == pred_va).mean()), 4),
            "validation_accuracy_int8": round(float((pred_q == y_va).mean()), 4),
            "validation_accuracy_float": round(float((pred_va == y_va).mean()), 4),
            "feature_error_over_spread": relative_error(f_tr, q_tr), "seconds": round(seconds, 2)}


def balanced_class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """n / (k * count_c): every class weighs the same in the loss, whatever its image count."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return {c: float(len(y) / (n_classes * counts[c])) if counts[c] else 0.0 for c in range(n_classes)}


def predicted_labels(probs: np.ndarray) -> np.ndarray:
    """Class indices from the head's output: one sigmoid unit (binary) or one score per class."""
    return (probs[:, 0] > 0.5).astype(int) if probs.shape[1] == 1 else probs.argmax(1)


def predict_batches(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Direct batched calls: unlike Model.predict, these also work under every tf.distribute strategy."""
    return np.concatenate([np.asarray(model(x[i : i + batch_size].astype(np.float32), training=False))
                           for i in range(0, len(x), batch_size)])


def evaluate(model, x, y, n_classes: int, class_names: list[str]) -> dict:
    probs = predict_batches(model, x)
    pred = predicted_labels(probs)
    cm = np.zeros((n_classes, n_classes), int)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    per_class = {}
    for i, name in enumerate(class_names):
        tp, col, row = cm[i, i], cm[:, i].sum(), cm[i].sum()
        per_class[name] = {
            "precision": float(tp / col) if col else 0.0,
            "recall": float(tp / row) if row else 0.0,
            "support": int(row),
        }
    return {"val_accuracy": float((pred == y).mean()) if len(y) else None, "confusion_matrix": cm.tolist(), "per_class": per_class}


def _versions() -> dict:
    import keras
    import tensorflow as tf

    return {"python": sys.version.split()[0], "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise TrainerError(f"Expected a writable output folder. Received: out_dir={str(out_dir)!r} ({e.strerror or e})") from None


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
    dist = _distribution(cfg.distribute)
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
        trainer = _Trainer(cfg, spec, base, head, model, features, decision, xs, n_classes, log)
        getattr(trainer, f"strategy_{decision.strategy}")()
        model, head_info = trainer.finish_head()

    metrics = evaluate(model, xs[1][0], xs[1][1], n_classes, split.class_names)
    log(f"validation accuracy: {metrics['val_accuracy']:.3f}")

    if not _is_chief(cfg.distribute):
        log("multi-worker: this worker is not the chief; the chief writes the run folder")
        return RunResult(None, decision, {"metrics": metrics})
    name = cfg.name or time.strftime(f"{cfg.backbone}-%Y%m%d-%H%M%S")
    dest = cfg.out_dir / name
    recover_interrupted(dest)  # what a killed run left: its staging folder, or a previous run set aside
    tmp = staging_path(dest)
    try:
        tmp.mkdir(parents=True)
        model.save(tmp / "model.keras")
        (tmp / "labels.txt").write_text("\n".join(split.class_names) + "\n")
        split.save(tmp / "split.json")
        report = {
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
            "class_counts": {"train": counts, "val": split.counts("val")},
            "imbalance_ratio": round(split.imbalance_ratio(), 3),
            "skipped_files": split.skipped,
            "similarity": decision.similarity,
            "similarity_score": decision.similarity_score,
            "similarity_detail": sim.to_dict() if sim else None,
            "quadrant": decision.quadrant,
            "strategy": decision.strategy,
            "decision": decision.to_dict(),
            **layer_counts(model),
            "metrics": {**metrics, **head_info, "val_loss_best": min(trainer.history.get("val_loss", [float("nan")]))},
            "history": trainer.history,
            "phases": trainer.phases,
            "head_recipe": trainer.head_recipe.to_dict() if trainer.head_recipe else None,
            "int8_expectation": trainer.int8_expectation,
            "timings_s": {"decode": round(decode_seconds, 2), "total": round(time.perf_counter() - started, 2)},
            "config": cfg.to_dict(),
            "versions": _versions(),
        }
        from .report import write_report

        write_report(tmp, report, log)
        publish_dir(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainerError(f"Could not write the run folder in {cfg.out_dir}: {e.strerror or e}. "
                           f"Expected a writable folder with free space. Received: out_dir={str(cfg.out_dir)!r}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"run saved: {dest}")
    for line in closing_lines(report, dest):
        log(line)
    return RunResult(dest, decision, report)


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
        verdict = (f"at or above the export's {floor:.0%} floor: edgeport export {run_dir} --device raspberry-pi-4"
                   if agree >= floor else
                   f"under the export's {floor:.0%} floor, so an int8 export will be refused; float16 keeps the answers: "
                   f"edgeport export {run_dir} --format tflite --precision float16")
        lines.append(f"int8: expect {agree:.1%} agreement with this model on the validation images (accuracy "
                     f"{expect['validation_accuracy_float']:.1%} -> {expect['validation_accuracy_int8']:.1%}), {verdict}")
    return lines


def _distribution(kind: str | None):
    import tensorflow as tf

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()  # the default, no-op strategy


def _is_chief(kind: str | None) -> bool:
    """In multi-worker training only the chief (or worker 0 when there is none) writes output."""
    if kind != "multi_worker":
        return True
    import json

    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = tf_config.get("task", {})
    if "chief" in tf_config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


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
