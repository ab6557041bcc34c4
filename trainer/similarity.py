"""How similar is the user's data to what the pretrained backbone was trained on?

Every batch-normalization layer of a pretrained backbone stores the mean and
variance of its input channels over the pretraining data. Feeding the user's
images and measuring how far their per-channel statistics sit from the stored
ones is a direct, label-free measure of domain shift (the idea behind
BN-statistics adaptation, Li et al. 2016, "Revisiting Batch Normalization for
Practical Domain Adaptation"). For each channel we use the symmetric KL
divergence between the two Gaussians; the score is exp(-mean divergence), in
(0, 1], 1 meaning the statistics match exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLD = 0.5  # score >= threshold -> "high"
MAX_IMAGES = 256


@dataclass
class SimilarityResult:
    score: float
    label: str
    per_layer: list[float]
    threshold: float


def bn_divergence(mu_d, var_d, mu_s, var_s, eps: float = 1e-3) -> float:
    """Mean per-channel symmetric KL between N(mu_d, var_d) and N(mu_s, var_s)."""
    var_d, var_s = var_d + eps, var_s + eps
    kl = 0.5 * ((var_d / var_s + var_s / var_d) - 2 + (mu_d - mu_s) ** 2 * (1 / var_s + 1 / var_d))
    return float(np.mean(kl))


def estimate_similarity(base, spec, x_raw: np.ndarray, threshold: float = DEFAULT_THRESHOLD, seed: int = 0, log=print) -> SimilarityResult:
    """Score raw 0-255 RGB images against the statistics stored in `base`'s batch-norm layers."""
    import keras

    from .backbones import normalization_layers

    bns = [l for l in base.layers if isinstance(l, keras.layers.BatchNormalization)]
    probe = keras.Model(base.inputs, [l.input for l in bns])
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x_raw))[:MAX_IMAGES]
    x = x_raw[idx].astype(np.float32)
    for layer in normalization_layers(spec, x.shape[1]):
        x = np.asarray(layer(x))
    sums = sq = None
    for start in range(0, len(x), 32):
        outs = probe.predict_on_batch(x[start : start + 32])
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        flat = [np.asarray(o, np.float64).reshape(-1, o.shape[-1]) for o in outs]
        if sums is None:
            sums, sq = [f.sum(0) for f in flat], [(f**2).sum(0) for f in flat]
        else:
            sums = [s + f.sum(0) for s, f in zip(sums, flat)]
            sq = [s + (f**2).sum(0) for s, f in zip(sq, flat)]
    per_layer = []
    for bn, s, q, o in zip(bns, sums, sq, probe.outputs):
        rows = len(x) * float(np.prod(o.shape[1:-1]))  # images x spatial positions
        mu = s / rows
        var = np.maximum(q / rows - mu**2, 0.0)
        per_layer.append(bn_divergence(mu, var, np.asarray(bn.moving_mean), np.asarray(bn.moving_variance), bn.epsilon))
    score = float(np.exp(-np.mean(per_layer)))
    label = "high" if score >= threshold else "low"
    log(f"similarity: score {score:.3f} over {len(bns)} batch-norm layers and {len(x)} images -> {label} (threshold {threshold})")
    return SimilarityResult(score, label, per_layer, threshold)

