"""Which precision of a multi-precision bundle to serve: the one pinned, or the fastest measured here.

Which precision runs fastest depends on the CPU (TFLite int8 is 0.46x float32's latency on a CPU with
AVX-512 VNNI, 1.11x on an AVX2 CPU without it), so `edgeport export --precision auto` writes every
precision that passed its agreement floor and the device times them when it starts. Plain functions:
the service calls `decide`, tests call it with their own timings.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from .bundle import Bundle
from .errors import BundleError

# Per entry: untimed runs first (allocation, caches, XNNPACK's packing), then timed runs taken in turns,
# one of each entry per round, so a noisy neighbour slows every entry alike; the median of each counts.
WARM_RUNS = 2
TIMED_RUNS = 5


@dataclass
class Choice:
    precision: str
    reason: str  # "fastest here", "pinned by --precision", "pinned by device profile NAME", ...
    timings_ms: dict[str, float] | None = None  # median batch-1 latency of every entry, when timed
    bundle_sha256: str | None = None  # the bundle this was decided for: a reload of another bundle decides again

    def summary(self) -> str:
        """`int8 (fastest here: int8 1.90 ms, float16 4.10 ms)`: the start-up line's words."""
        if not self.timings_ms:
            return f"{self.precision} ({self.reason})"
        times = ", ".join(f"{p} {ms:.2f} ms" for p, ms in sorted(self.timings_ms.items(), key=lambda kv: kv[1]))
        return f"{self.precision} ({self.reason}: {times})"

    def to_dict(self) -> dict:
        return asdict(self)


def time_runners(runners: dict[str, Callable[[np.ndarray], object]], x: np.ndarray,
                 warm: int = WARM_RUNS, runs: int = TIMED_RUNS) -> dict[str, float]:
    """name -> median milliseconds of `run(x)`, the runs of all names interleaved."""
    for _ in range(warm):
        for run in runners.values():
            run(x)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            t = time.perf_counter()
            run(x)
            samples[name].append((time.perf_counter() - t) * 1e3)
    return {name: round(statistics.median(s), 3) for name, s in samples.items()}


def fastest(timings_ms: dict[str, float]) -> str:
    return min(timings_ms, key=timings_ms.get)


def representative_input(size: int, seed: int = 0) -> np.ndarray:
    """One image of seeded random pixels: a CNN does the same work whatever the pixels, so this times it fairly."""
    return np.random.default_rng(seed).integers(0, 256, (1, size, size, 3), dtype=np.uint8)


def measure(bundle: Bundle, open_model: Callable) -> dict[str, float]:
    """Median batch-1 milliseconds of every precision in the bundle; `open_model(path)` -> a runtime."""
    runtimes = {p: open_model(bundle.with_precision(p).model_path) for p in bundle.precisions}
    size = int(next(iter(runtimes.values())).input.shape[1])
    return time_runners({p: rt.run for p, rt in runtimes.items()}, representative_input(size))


def decide(bundle: Bundle, measure_fn: Callable[[Bundle], dict[str, float]], pinned: str | None = None,
           pinned_by: str = "--precision", decided: dict | None = None) -> Choice:
    """The precision to serve and why.

    `pinned` (a flag or a device profile) wins without timing; `decided` is a choice already made for this
    bundle (the supervisor's, shared by its workers) and is taken as it is; otherwise every entry is timed
    with `measure_fn` and the fastest is served.
    """
    held = bundle.precisions
    if len(held) == 1:
        if pinned is not None and pinned != held[0] and pinned_by == "--precision":
            raise BundleError(f"Expected --precision {held[0]} or none: the bundle holds that precision only. "
                              f"Received: --precision {pinned} for {bundle.path}")
        return Choice(held[0], "the only precision in the bundle")
    reason = "fastest here"
    if pinned in held:
        return Choice(pinned, f"pinned by {pinned_by}", None, bundle.meta.get("sha256"))
    if pinned is not None:
        if pinned_by == "--precision":
            raise BundleError(f"Expected a precision the bundle holds, one of {held}. Received: --precision {pinned} for {bundle.path}")
        # A profile speaks for every bundle on the device: one that lacks its precision is still served.
        reason = f"fastest here; {pinned_by} pins {pinned}, which this bundle does not hold"
    if decided and decided.get("bundle_sha256") == bundle.meta.get("sha256") and decided.get("precision") in held:
        return Choice(**decided)
    timings = measure_fn(bundle)
    return Choice(fastest(timings), reason, timings, bundle.meta.get("sha256"))
