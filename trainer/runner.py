"""One runner executes a strategy's phases on one model and records what each phase did."""

from __future__ import annotations

import time

import numpy as np

from exporter.console import fit_display, predict, steps

from .distributed import distributed_fit
from .evaluation import predicted_labels
from .freezing import layer_counts, set_trainable
from .heads import LINEAR_HEADS, assemble, fit_linear_svm, loss_for, svm_head
from .input_pipeline import (
    augmenter,
    balanced_class_weights,
    feature_datasets,
    make_dataset,
)
from .phases import HeadPhase, ImagePhase, Phase, blocks_for, epochs_for, holds


class PhaseRunner:
    """Runs phases in order on one model; keeps the training history, the phase log and the head's recipe."""

    def __init__(self, cfg, spec, base, head, model, features, decision, xs, n_classes: int, log):
        self.cfg, self.spec, self.base, self.head = cfg, spec, base, head
        self.model, self.features, self.decision, self.log = model, features, decision, log
        (self.x_tr, self.y_tr), (self.x_va, self.y_va) = xs
        self.n_classes = n_classes
        self.history: dict[str, list] = {}
        self.phases: list[dict] = []
        self.class_weight = balanced_class_weights(self.y_tr, n_classes) if decision.class_weights == "balanced" else None
        self.head_recipe = None  # a RecipeChoice once a linear head is solved on cached features
        self.int8_expectation = None  # what an int8 export of a frozen-base run will do, measured on the validation images

    def run(self, phases: list[Phase]) -> None:
        execute = {HeadPhase: self.run_head_phase, ImagePhase: self.run_image_phase}
        for phase in phases:
            execute[type(phase)](phase)

    def run_head_phase(self, phase: HeadPhase) -> None:
        set_trainable(self.base, self.spec, 0)
        if not self.cfg.extra.get("cache_features", True):  # the naive path, kept for the benchmark
            self._fit_images("head (uncached)", self.decision.learning_rates[phase.learning_rate], epochs_for(phase, self.cfg),
                             self.decision.augment)
            return
        f_tr, y_tr, f_va = self.cached_features(augmented_views=self.decision.augment and phase.final)
        if self.cfg.head == "svm" and phase.final:
            return  # the SVM is fit on features in finish_head
        if self.cfg.head in LINEAR_HEADS:
            self.solve_linear_head(f_tr, y_tr, f_va)
            return
        self._fit_head_on_features(f_tr, y_tr, f_va, self.decision.learning_rates[phase.learning_rate], epochs_for(phase, self.cfg))

    def run_image_phase(self, phase: ImagePhase) -> None:
        blocks = blocks_for(phase, self.decision)
        set_trainable(self.base, self.spec, blocks, keep_bn_frozen=holds(phase.keep_bn_frozen, self.decision))
        self._fit_images(phase.name.format(blocks=blocks), self.decision.learning_rates[phase.learning_rate],
                         epochs_for(phase, self.cfg), self.decision.augment, guard=holds(phase.guard, self.decision))

    def _callbacks(self):
        """Early stopping, and the epoch display: tqdm's bars on a terminal, else one line per epoch (Keras')."""
        import keras

        display, verbose = fit_display()
        return [keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.cfg.patience, restore_best_weights=True),
                *display], verbose

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
            history = distributed_fit(self.model, train_ds, self.x_va, self.y_va, lr=lr, epochs=epochs, n_classes=self.n_classes,
                                      class_weight=self.class_weight, global_batch=cfg.batch_size, patience=cfg.patience, log=self.log)
        else:
            self._compile(self.model, lr)
            if guard:
                start_weights = self.model.get_weights()
                start_loss = float(self.model.evaluate(val_ds, verbose=0)[0])
            # shuffle=False: the tf.data pipeline already reshuffles every epoch.
            callbacks, verbose = self._callbacks()
            history = self.model.fit(train_ds, validation_data=val_ds, epochs=epochs, shuffle=False, class_weight=self.class_weight,
                                     callbacks=callbacks, verbose=verbose).history
        kept = True
        if start_loss is not None and min(history.get("val_loss", [np.inf])) >= start_loss:
            self.model.set_weights(start_weights)
            kept = False
            self.log(f"[{phase}] did not improve the validation loss ({start_loss:.4f}); kept the model from before it")
        self._record(phase, history, lr, time.perf_counter() - t)
        self.phases[-1]["kept"] = kept

    def cached_features(self, augmented_views: bool):
        """Run the frozen base once per image, plus `augment_views` augmented copies when `augmented_views`
        (a frozen-base run, whose head recipe search decides how many of them help)."""
        cfg = self.cfg
        t = time.perf_counter()
        self.log(f"[features] extracting features of {len(self.x_tr)} training and {len(self.x_va)} validation images")
        bs = max(cfg.batch_size, 64)
        f_tr = [predict(self.features, self.x_tr.astype(np.float32), bs, "features: training")]
        if augmented_views:
            aug = augmenter(cfg.seed)
            for view in range(cfg.augment_views):
                ds = make_dataset(self.x_tr, self.y_tr, bs, shuffle=False, augment=False, seed=cfg.seed)
                batches = steps(ds, f"features: augmented view {view + 1}/{cfg.augment_views}", total=-(-len(self.x_tr) // bs), unit="batch")
                f_tr.append(np.concatenate([self.features.predict_on_batch(aug(a, training=True)) for a, _ in batches]))
                self.log(f"[features] augmented view {view + 1}/{cfg.augment_views}")
        f_va = predict(self.features, self.x_va.astype(np.float32), bs, "features: validation")
        y_tr = np.concatenate([self.y_tr] * len(f_tr))
        self.phases.append({"phase": "feature extraction", "seconds": round(time.perf_counter() - t, 2), "views": len(f_tr)})
        return np.concatenate(f_tr), y_tr, f_va

    def _fit_head_on_features(self, f_tr, y_tr, f_va, lr: float, epochs: int) -> None:
        """A head that is not one Dense layer (fc) is trained by gradient descent on the cached features."""
        self._compile(self.head, lr)
        self.log(f"[head] fitting the head on {len(f_tr)} cached feature vectors, lr={lr:g}")
        train_ds, val_ds = feature_datasets(f_tr, y_tr, f_va, self.y_va, self.cfg.batch_size, self.cfg.seed)
        t = time.perf_counter()
        callbacks, verbose = self._callbacks()
        hist = self.head.fit(train_ds, validation_data=val_ds, epochs=epochs, shuffle=False, class_weight=self.class_weight,
                             callbacks=callbacks, verbose=verbose)
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
        f_tr = predict(self.features, self.x_tr.astype(np.float32), 64, "features: training")
        W, b, C, cv, _ = fit_linear_svm(f_tr, self.y_tr, seed=self.cfg.seed, log=self.log)
        head = svm_head(W, b, self.n_classes)
        model, self.features = assemble(self.spec, self.base, head, self.x_tr.shape[1])
        self.phases.append({"phase": "svm", "seconds": round(time.perf_counter() - t, 2), "C": C})
        return model, {"svm_C": C, "svm_cv_accuracy": cv}


def int8_expectation(head, f_tr, q_tr, pred_va, q_va, y_va, seconds: float) -> dict:
    """The int8 base + this head on the validation images, against the float model's answers."""
    from .int8_probe import relative_error

    from .head_recipe import bias_shift

    pred_q = predicted_labels(np.asarray(head(q_va - bias_shift(f_tr, q_tr), training=False)))
    return {"runtime": "TFLite all-int8, calibrated on 200 training images, without the export's per-layer bias "
                       "correction (less its mean shift); the export's corrected files measured 0-8 points more on the shared sets",
            "validation_agreement": round(float((pred_q == pred_va).mean()), 4),
            "validation_accuracy_int8": round(float((pred_q == y_va).mean()), 4),
            "validation_accuracy_float": round(float((pred_va == y_va).mean()), 4),
            "feature_error_over_spread": relative_error(f_tr, q_tr), "seconds": round(seconds, 2)}
