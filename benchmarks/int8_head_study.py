"""Can the head alone make int8 agree? Head candidates scored on the int8 base's real features.

For each default 224 px run given (a frozen MobileNetV2 base + linear head, `edgeport train DATA --image-size
224`), the float pooled features of every original image (training and validation) are computed once, and the
int8 features of the same images through four int8 files of the base: TFLite and ONNX, all-int8 and with the
float islands of exporter/quant_recipe.py, each calibrated on the exporter's 200 calibration images. Cached in
--cache (one .npz a run).

Then, by stratified 5-fold cross-validation over all those images (more held-out answers than the validation
split alone: one image is 0.1-0.2 point instead of 0.5-1.1), each head candidate is fitted on the training
folds and scored on the held-out fold: float accuracy, and per int8 file the top-1 agreement with the float
head and the int8 accuracy, the int8 logits bias-corrected by the training folds' mean feature shift as the
exporter corrects them. The candidates (`CANDIDATES`) add rows to the head's training data:

  plain      the float features alone (what the trainer fits)
  noise      + one copy with Gaussian noise of the measured per-feature int8 error spread
  boot1/4    + one / four copies with real int8 error vectors of other training images added
  int8 rows  + the int8 base's own features (all-int8 TFLite, shift removed): a head fitted on what it will meet

A second table scores the trainer's recipe search itself (trainer.head_recipe.choose_recipe, run inside each
outer fold: nested cross-validation) with no int8 features, with the all-int8 TFLite features (what the trainer's
int8 probe measures) and with the float-island TFLite features.

    python benchmarks/int8_head_study.py RUN_DIR [RUN_DIR ...] [--cache DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = ("tflite_all", "tflite_isl", "onnx_all", "onnx_isl")
FOLDS = 5


def extract(run: Path, cache: Path) -> dict:
    """Float and int8 pooled features of the run's training and validation images, cached."""
    path = cache / f"{run.name}.npz"
    if path.exists():
        return dict(np.load(path))
    import keras

    from edge_core.runtimes import RuntimeOptions, open_runtime
    from exporter import calibration as calib
    from exporter import to_onnx, to_tflite
    from exporter.quant_recipe import float_layers
    from trainer.data import Split, load_pixels

    t = time.perf_counter()
    model = keras.models.load_model(run / "model.keras")
    features = keras.Model(model.inputs, model.get_layer("pool").output)  # the pooled features the head reads
    split = Split.load(run / "split.json")
    size = model.input_shape[1]
    (x_tr, y_tr), (x_va, y_va) = (load_pixels(items, size) for items in (split.train, split.val))
    x, y = np.concatenate([x_tr, x_va]).astype(np.float32), np.concatenate([y_tr, y_va])
    index = {p: i for i, (p, _) in enumerate(split.train)}
    x_cal = x_tr[[index[p] for p, _ in calib.spread(list(split.train), 200, 0)]]  # the exporter's calibration draw
    out = {"y": y, "train": np.arange(len(x_tr)),
           "float": np.concatenate([np.asarray(features(x[i : i + 64], training=False)) for i in range(0, len(x), 64)])}
    for fmt, module in (("tflite", to_tflite), ("onnx", to_onnx)):
        for name, keep in (("all", ()), ("isl", float_layers(model))):
            with tempfile.TemporaryDirectory() as tmp:
                file = Path(tmp) / f"features.{fmt}"
                module.convert(features, "int8", file, x_cal, Path(tmp), log=lambda m: None, io_dtype="float32", keep_float=keep)
                rt = open_runtime(fmt, file, RuntimeOptions(threads=2))
                out[f"{fmt}_{name}"] = np.concatenate([rt.run(x[i : i + 1]) for i in range(len(x))])
            print(f"{run.name}: {fmt} {name} features in {time.perf_counter() - t:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def _noise(f, q, y, rng):
    err = q - f
    return np.concatenate([f, f + rng.normal(size=f.shape) * err.std(0)]), np.tile(y, 2)


def _boot(copies):
    def rows(f, q, y, rng):
        err = (q - f) - (q - f).mean(0)
        return np.concatenate([f] + [f + err[rng.integers(0, len(f), len(f))] for _ in range(copies)]), np.tile(y, copies + 1)
    return rows


def _int8_rows(f, q, y, rng):
    return np.concatenate([f, q - (q - f).mean(0)]), np.tile(y, 2)


# candidate -> (float features, all-int8 TFLite features, labels, rng) -> (training rows, their labels)
CANDIDATES = {
    "plain": lambda f, q, y, rng: (f, y),
    "noise": _noise,
    "boot1": _boot(1),
    "boot4": _boot(4),
    "int8 rows": _int8_rows,
}


def recipes():
    from trainer.head_recipe import Recipe

    return {"int8-aware (int8-error scaling, C=0.001, balanced)": Recipe(0, "balanced", 0.001, "int8-error"),
            "standardized, C=0.01": Recipe(0, "none", 0.01, "standardized")}


def fit(rows, labels, recipe, f, q, n_classes):
    """(W, b) of the recipe's logistic regression on `rows`, its scaler fitted on the float features `f`."""
    from sklearn.linear_model import LogisticRegression

    from trainer.head_recipe import _scaler, _weights, one_blas_thread
    from trainer.heads import converging_quietly, fold_scaler

    scaler = _scaler(recipe.scaling, f, q)
    with converging_quietly(), one_blas_thread():
        x = scaler.fit(f).transform(rows)
        linear = LogisticRegression(C=recipe.C, max_iter=500).fit(x, labels, sample_weight=_weights(labels, recipe.class_weights, n_classes))
    coef, intercept = fold_scaler(scaler, linear)
    return coef.T, intercept


def cross_validate(d: dict, fit_fold) -> dict:
    """`fit_fold(k, train_indices)` -> (W, b) on each of FOLDS stratified folds, scored on the held-out fold:
    float accuracy, and per int8 file its agreement with the float answer and its accuracy."""
    from sklearn.model_selection import StratifiedKFold

    f, y = d["float"], d["y"]
    acc, agree, q_acc = [], {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    for k, (tr, te) in enumerate(StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(f, y)):
        W, b = fit_fold(k, tr)
        pred = (f[te] @ W + b).argmax(1)
        acc.append((pred == y[te]).mean())
        for v in VARIANTS:
            q_pred = (d[v][te] @ W + b).argmax(1)
            agree[v].append((q_pred == pred).mean())
            q_acc[v].append((q_pred == y[te]).mean())
    return {"float_accuracy": float(np.mean(acc)), **{f"{v} agreement": float(np.mean(agree[v])) for v in VARIANTS},
            **{f"{v} accuracy": float(np.mean(q_acc[v])) for v in VARIANTS}}


def study(d: dict) -> list[dict]:
    f, y = d["float"], d["y"]
    n_classes = int(y.max()) + 1
    rows_out = []
    for rname, recipe in recipes().items():
        for cname, candidate in CANDIDATES.items():
            def fit_fold(k, tr, recipe=recipe, candidate=candidate):
                rows, labels = candidate(f[tr], d["tflite_all"][tr], y[tr], np.random.default_rng(k))
                return fit(rows, labels, recipe, f[tr], d["tflite_all"][tr], n_classes)

            rows_out.append({"recipe": rname, "candidate": cname, **cross_validate(d, fit_fold)})
    return rows_out


def search_study(d: dict) -> list[dict]:
    """The recipe search run on each outer training fold, given the features of `probe` (None: float only)."""
    from trainer.head_recipe import choose_recipe, fit_recipe

    f, y = d["float"], d["y"]
    n_classes = int(y.max()) + 1
    out = []
    for probe in (None, "tflite_all", "tflite_isl"):
        def fit_fold(k, tr, probe=probe):
            q = None if probe is None else d[probe][tr]
            choice = choose_recipe(f[tr], y[tr], n_classes, class_weight_options=("none", "balanced"), int8=q, log=lambda m: None)
            return fit_recipe(f[tr], y[tr], n_classes, choice.recipe, int8=q)

        out.append({"recipe": f"search scored on {probe or 'float only'}", "candidate": "plain", **cross_validate(d, fit_fold)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgeport-int8-head-study")
    args = ap.parse_args()
    for run in args.runs:
        d = extract(run, args.cache)
        print(f"\n{run.name}: {len(d['y'])} images, {FOLDS}-fold CV; float acc, then agreement / int8 acc per int8 file")
        print("| recipe | head trained on | float acc | " + " | ".join(VARIANTS) + " |")
        print("|---" * (3 + len(VARIANTS)) + "|")
        for r in study(d) + search_study(d):
            print(f"| {r['recipe']} | {r['candidate']} | {100 * r['float_accuracy']:.1f}% | "
                  + " | ".join(f"{100 * r[f'{v} agreement']:.1f} / {100 * r[f'{v} accuracy']:.1f}" for v in VARIANTS) + " |", flush=True)


if __name__ == "__main__":
    main()
