"""How similar is the user's data to what the pretrained backbone was trained on?

Every batch-normalization layer of a pretrained backbone stores the mean and
variance of its input channels over the pretraining data. Feeding the user's
images and measuring how far their per-channel statistics sit from the stored
ones is a direct, label-free measure of domain shift (the idea behind
BN-statistics adaptation, Li et al. 2016, "Revisiting Batch Normalization for
Practical Domain Adaptation").

The first version averaged a per-channel KL divergence over every channel and
layer and took exp(-mean). On real ImageNet weights that saturated (every far
domain scored exactly 0.000) and a few channels decided everything: dead
channels whose stored variance is ~1e-36 and one late layer gave divergences of
17-200. So, measured on MobileNetV2 0.35 (see README, "Transfer learning,
measured"):

- dead channels (stored variance below 1e-3 of the layer's median) are left
  out: they carry no statistics to compare with;
- a layer's divergence is the MEDIAN symmetric KL over its live channels, so a
  few odd channels cannot move it;
- layers are combined in log space, log(1 + divergence), with the top and
  bottom 10% of layers trimmed, so one outlier layer cannot dominate;
- score = exp(-that trimmed mean), in (0, 1]: 1 is a perfect match, and far
  domains keep distinct, ordered values (flat grey 0.12, noise 0.30, digits
  0.49-0.51, Tux Paint 0.89, photos 0.96 at 224 px).

The statistics were gathered at the checkpoint's resolution and the score moves
with the probe's resolution (digits 0.49 at 224 px, 0.63 at 96 px), so the
caller probes at the checkpoint's resolution whatever size it trains at, and
one threshold per backbone holds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

MAX_IMAGES = 256
DEAD_FRACTION = 1e-3  # a channel whose stored variance is below this share of its layer's median is dead
TRIM = 0.1  # share of layers trimmed at each end
UNCALIBRATED_THRESHOLD = 0.70


@dataclass(frozen=True)
class Calibration:
    threshold: float
    resolution: int
    measured_on: str


# Thresholds measured with benchmarks/similarity_table.py on ../shared/datasets (README). Keyed by
# (backbone, alpha): other widths are other weights, and another backbone's statistics are on
# another scale, so they are not assumed to share a threshold.
CALIBRATIONS: dict[tuple[str, float | None], Calibration] = {
    ("mobilenet_v2", 0.35): Calibration(
        0.70, 224,
        "ImageNet MobileNetV2 0.35 (224 px checkpoint): package photos 0.96, Tux Paint 0.89 (ImageNet-like) | "
        "printed digits 0.51, handwritten digits 0.49, noise 0.30, flat grey 0.12 (not); threshold midway "
        "between Tux Paint and the digits",
    ),
}


@dataclass
class SimilarityResult:
    score: float
    label: str
    threshold: float
    calibrated: bool
    calibration: str  # what the threshold was measured on, or why it is a guess
    probe_size: int
    images: int
    per_layer: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def calibration_for(backbone: str, alpha: float | None, weights: str | None) -> tuple[float, bool, str]:
    """(threshold, calibrated?, what it rests on) for this backbone, width and weights."""
    cal = CALIBRATIONS.get((backbone, alpha))
    if cal is None:
        return UNCALIBRATED_THRESHOLD, False, (
            f"uncalibrated: no real pretrained weights of {backbone} alpha={alpha} could be measured, "
            f"so {UNCALIBRATED_THRESHOLD} is MobileNetV2 0.35's threshold, not this backbone's; "
            "pass --similarity high|low if you know better")
    if weights != "imagenet":
        return cal.threshold, False, (
            f"calibrated for ImageNet weights only; these weights are {weights!r}, so the threshold is a guess")
    return cal.threshold, True, cal.measured_on


def channel_divergence(mu_d, var_d, mu_s, var_s):
    """Per-channel symmetric KL between N(mu_d, var_d) and N(mu_s, var_s)."""
    return 0.5 * ((var_d / var_s + var_s / var_d) - 2 + (mu_d - mu_s) ** 2 * (1 / var_s + 1 / var_d))


def layer_divergence(mu_d, var_d, mu_s, var_s, eps: float) -> tuple[float, int, int]:
    """(median divergence over live channels, live channels, dead channels)."""
    live = var_s > DEAD_FRACTION * np.median(var_s)
    if not live.any():
        return 0.0, 0, int(live.size)
    div = channel_divergence(mu_d[live], var_d[live] + eps, mu_s[live], var_s[live] + eps)
    return float(np.median(div)), int(live.sum()), int((~live).sum())


def combine(divergences) -> tuple[float, np.ndarray]:
    """exp(-trimmed mean of log(1 + divergence)) over layers, and which layers were trimmed."""
    logs = np.log1p(np.asarray(divergences, np.float64))
    k = int(len(logs) * TRIM)
    order = np.argsort(logs)
    kept = np.ones(len(logs), bool)
    if k:
        kept[order[:k]] = kept[order[-k:]] = False
    return float(np.exp(-logs[kept].mean())), ~kept


def channel_statistics(probe, x: np.ndarray, batch: int = 32):
    """Per BN input: (mean, variance) per channel over images x positions, in float64."""
    sums = sq = None
    rows = None
    for start in range(0, len(x), batch):
        outs = probe.predict_on_batch(x[start : start + batch])
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        flat = [np.asarray(o, np.float64).reshape(-1, o.shape[-1]) for o in outs]
        if sums is None:
            sums, sq, rows = [f.sum(0) for f in flat], [(f**2).sum(0) for f in flat], [0] * len(flat)
        else:
            sums = [s + f.sum(0) for s, f in zip(sums, flat)]
            sq = [s + (f**2).sum(0) for s, f in zip(sq, flat)]
        rows = [r + len(f) for r, f in zip(rows, flat)]
    means = [s / r for s, r in zip(sums, rows)]
    return [(m, np.maximum(q / r - m**2, 0.0)) for m, q, r in zip(means, sq, rows)]


def estimate_similarity(base, spec, x_raw: np.ndarray, *, threshold: float | None = None, calibrated: bool = False,
                        calibration: str = "", alpha: float | None = None, seed: int = 0, log=print) -> SimilarityResult:
    """Score raw 0-255 RGB images against the statistics stored in `base`'s batch-norm layers.

    `x_raw` may be at another size than `base`'s input (the checkpoint's resolution, say):
    the probe is then a copy of the base at that size with the same weights.
    """
    import keras

    from .backbones import normalization_layers, rebuild_at

    if threshold is None:
        threshold, calibrated, calibration = calibration_for(spec.name, alpha, "imagenet")
    size = x_raw.shape[1]
    if base.input_shape[1] != size:
        base = rebuild_at(spec, base, size, alpha)
    bns = [l for l in base.layers if isinstance(l, keras.layers.BatchNormalization)]
    probe = keras.Model(base.inputs, [l.input for l in bns])
    rng = np.random.default_rng(seed)
    x = x_raw[rng.permutation(len(x_raw))[:MAX_IMAGES]].astype(np.float32)
    for layer in normalization_layers(spec, size):
        x = np.asarray(layer(x))
    per_layer = []
    for bn, (mu, var) in zip(bns, channel_statistics(probe, x)):
        div, live, dead = layer_divergence(mu, var, np.asarray(bn.moving_mean, np.float64),
                                           np.asarray(bn.moving_variance, np.float64), bn.epsilon)
        per_layer.append({"layer": bn.name, "divergence": round(div, 4), "channels": live, "dead_channels": dead})
    score, trimmed = combine([p["divergence"] for p in per_layer])
    for p, t in zip(per_layer, trimmed):
        p["trimmed"] = bool(t)
    label = "high" if score >= threshold else "low"
    dead = sum(p["dead_channels"] for p in per_layer)
    worst = max(per_layer, key=lambda p: p["divergence"])
    note = "" if calibrated else " (threshold uncalibrated for these weights)"
    log(f"similarity: score {score:.3f} over {len(bns)} batch-norm layers ({dead} dead channels left out; "
        f"largest divergence {worst['divergence']:.2f} in {worst['layer']}) and {len(x)} images at {size} px "
        f"-> {label} (threshold {threshold}){note}")
    return SimilarityResult(score, label, threshold, calibrated, calibration, size, len(x), per_layer)
