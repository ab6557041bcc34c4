"""The model service: a verified bundle, a pool of runtimes, and pixels -> ranked labels.

The server's routes, the `predict` command and the exporter's bench all call
this, so it stands on the ground floor: nothing here knows HTTP, and the
exporter uses it without importing the server.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .bundle import Bundle, load_bundle
from .errors import BadInput, BundleError, DeadlineExceeded, EdgeError
from .imageio import DECODE_MODES, DEFAULT_MAX_PIXELS, decode_peak, header_cost, open_image, to_model_input
from .options import option
from .pool import RuntimePool
from .precision_choice import decide as decide_precision
from .precision_choice import measure as measure_precisions
from .preprocessing import Preprocessing
from .runtimes import RuntimeOptions, open_runtime


@dataclass
class ServiceOptions:
    """How a model is served; each field that is a flag or a device-profile setting is declared here once
    (edge_core.options): the `serve` and `predict` parsers and the profile layer are built from it."""

    # None: 2 instances, or 1 on a single core
    pool_size: int | None = option(None, "model instances serving in parallel (default: from device or cores)",
                                   flag="--workers", profile="workers", type=int)
    # per pooled instance; None: cores / pool size
    threads: int | None = option(None, "threads per model instance (default: cores / workers)", profile="threads", type=int)
    # The extra instance for a request that arrives alone (pool.py); None: every core, up to
    # MAX_SOLO_THREADS, when that is more than `threads` and the model runs on the CPU; 0: none.
    solo_threads: int | None = option(None, "threads of one extra instance that serves a request arriving while no other runs "
                                            "(default: all cores up to 4, if more than --threads; 0: no such instance)",
                                      profile="solo_threads", type=int)
    # Counted once decoded: a larger JPEG is decoded at 1/2, 1/4 or 1/8 scale (imageio.limit_scale).
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "largest image decoded, in pixels (default 16,000,000: fits a 1 GB board); a larger "
                                                 "JPEG is decoded at 1/2, 1/4 or 1/8 scale to fit, other formats are refused", type=int)
    # "exact", "fast" (imageio.DECODE_MODES) or "auto": fast unless the bundle's own export check
    # measured fast decoding below MIN_FAST_AGREEMENT on the model's verification images.
    decode: str = option("auto", "fast: decode large JPEGs at reduced scale (about half the decoding work, pixels move ~1 level); "
                                 "exact: the trainer's pixels; auto (default): fast unless the bundle's export check found it "
                                 "changes more than 1%% of this model's answers", choices=["auto", *DECODE_MODES])
    onnx_providers: tuple[str, ...] = option(("CPUExecutionProvider",), cli=False, profile="onnx_providers", convert=tuple)
    onnx_mem_arena: bool = option(True, cli=False, profile="onnx_mem_arena")
    trt_cache_dir: str | None = option(None, cli=False, profile="trt_cache_dir")
    # Of a multi-precision bundle (export --precision auto); None: the fastest, timed at start (precision_choice.py).
    precision: str | None = option(None, "which precision of a multi-precision bundle (export --precision auto) to serve "
                                         "(default: from device, else the fastest, timed on this machine at start)",
                                   profile="precision")
    precision_pinned_by: str = "--precision"  # what set `precision`: the flag, or "device profile NAME"
    precision_decided: dict | None = None  # a choice made once for every worker (precision_choice.Choice.to_dict())
    warmup_runs: int = 2
    # What a bare model file expects (flags); None: read from the file's metadata, else raw 0-255 RGB with a warning.
    preprocessing: Preprocessing | None = None

    def runtime_options(self, threads: int) -> RuntimeOptions:
        return RuntimeOptions(threads=threads, onnx_providers=list(self.onnx_providers),
                              onnx_mem_arena=self.onnx_mem_arena, trt_cache_dir=self.trt_cache_dir)

    def resolved(self) -> tuple[int, int, int]:
        """(pool size, threads per pooled instance, threads of the solo instance or 0)."""
        cores = usable_cores()
        pool = self.pool_size or (1 if cores == 1 else 2)
        threads = self.threads or max(1, cores // pool)
        solo = self.solo_threads
        if solo is not None and solo < 0:
            raise EdgeError(f"Expected --solo-threads of 0 (none) or more. Received: {solo}")
        if solo is None:
            on_cpu = set(self.onnx_providers) <= {"CPUExecutionProvider"}  # a GPU session's speed is not its threads
            solo = min(cores, MAX_SOLO_THREADS) if on_cpu and min(cores, MAX_SOLO_THREADS) > threads else 0
        return pool, threads, solo


def usable_cores() -> int:
    """The cores this process may run on: a cpuset or taskset (a container, a capped service) counts, not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


MAX_SOLO_THREADS = 4  # past ~4 threads a batch-1 MobileNet gains little, and a big host's cores are better left to others
# The floor for anything that changes pixels: top-1 agreement with exact decoding.
MIN_FAST_AGREEMENT = 0.99


def choose_decode(requested: str, meta: dict) -> tuple[str, str]:
    """The decode mode to use and why (printed at start-up, and in GET /model)."""
    if requested not in ("auto", *DECODE_MODES):
        raise BundleError(f"Expected decode mode auto, {' or '.join(DECODE_MODES)}. Received: {requested!r}")
    if requested != "auto":
        return requested, "asked for with --decode"
    check = (meta.get("verification") or {}).get("fast_decode") or {}
    agreement = check.get("top1_agreement")
    if agreement is None:
        why = check.get("note") or "the bundle records no check: a bare model file or an older export"
        return "fast", f"auto, unchecked on this model: {why}"
    if agreement < MIN_FAST_AGREEMENT:
        return "exact", (f"auto: fast decoding agreed with exact on {agreement:.1%} of {check.get('images')} of this model's "
                         f"images, under the {MIN_FAST_AGREEMENT:.0%} floor")
    return "fast", f"auto: fast decoding agreed with exact on {agreement:.1%} of {check.get('images')} of this model's images"


def _without_paths(source):
    """bundle.json's source, with file paths cut to their names: GET /model is public, and the
    exporter's absolute paths say who built the model where (user names, folder layout)."""
    if not isinstance(source, dict):
        return source
    return {k: (os.path.basename(v) if isinstance(v, str) and (v.startswith("/") or ":\\" in v) else v) for k, v in source.items()}


class RequestContext:
    """One request as the service sees it: its deadline (time.monotonic(), or None), where its memory
    is admitted, and where the service leaves its stage timings (milliseconds).

    This base admits everything and has no deadline: what the predict command, the exporter's bench
    and tests use. The server passes its own (edge_server/context.py), which reserves memory against
    its budget and releases it when the request ends.
    """

    def __init__(self, deadline: float | None = None):
        self.deadline = deadline
        self.timings: dict[str, float] = {}

    def admit(self, nbytes: int, what: str) -> None:
        """Claim `nbytes` of memory for this request before spending it; raise TooLarge or Busy if it cannot be had."""


def to_probabilities(scores: np.ndarray, activation: str) -> np.ndarray:
    """Model output -> one probability per class."""
    if activation == "sigmoid" and scores.shape[1] == 1:
        p = scores[:, :1]
        return np.concatenate([1.0 - p, p], axis=1)
    if activation in ("linear", "logits", "none"):
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return scores


def choose_precision(bundle: Bundle, options: ServiceOptions):
    """Which of the bundle's precisions to serve (precision_choice.Choice): pinned, decided already, or
    timed here with the pooled instances' threads, what most requests run on."""
    ropts = options.runtime_options(options.resolved()[1])
    return decide_precision(bundle, lambda b: measure_precisions(b, lambda path: open_runtime(b.format, path, ropts)),
                            options.precision, options.precision_pinned_by, options.precision_decided)


class ModelService:
    def __init__(self, bundle: Bundle, options: ServiceOptions | None = None):
        self.bundle = bundle
        self.options = options or ServiceOptions()
        self.pool_size, self.threads, self.solo_threads = self.options.resolved()
        self.precision_choice = choose_precision(bundle, self.options)
        bundle = self.bundle = bundle.with_precision(self.precision_choice.precision)

        def opener(threads: int):
            ropts = self.options.runtime_options(threads)
            return lambda: open_runtime(bundle.format, bundle.model_path, ropts)

        self.warnings: list[str] = []
        self.preprocessing = self._preprocessing()
        self.pool = RuntimePool(opener(self.threads), self.pool_size, opener(self.solo_threads) if self.solo_threads else None)
        rt = self.pool.first
        self.backend = rt.backend
        self._check_against_bundle(rt)
        shape = rt.input.shape
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] or shape[1] <= 0:
            raise BundleError(f"Expected a model taking (N, H, W, 3) square RGB images. Received: input shape {shape}")
        self.size = int(shape[1])
        self.n_outputs = int(rt.output.shape[-1])
        self.n_classes = 2 if self.activation == "sigmoid" and self.n_outputs == 1 else self.n_outputs
        if bundle.meta.get("labels") is None:
            bundle.meta["labels"] = [f"class_{i}" for i in range(self.n_classes)]
        if len(self.labels) != self.n_classes:
            raise BundleError(f"The model has {self.n_classes} classes but {len(self.labels)} labels were given")
        self.decode_mode, self.decode_reason = choose_decode(self.options.decode, bundle.meta)
        self.ready = False
        self.loaded_at = time.time()

    @classmethod
    def from_path(cls, path, labels=None, options: ServiceOptions | None = None) -> "ModelService":
        return cls(load_bundle(path, labels), options)

    def _preprocessing(self) -> Preprocessing:
        """Declared (flags) or read from the file for a bare model; a bundle's is inside its graph."""
        meta, declared = self.bundle.meta, self.options.preprocessing
        if not meta.get("bare"):
            if declared is not None:
                raise BundleError(
                    f"Expected --input-range/--mean/--std/--color-order only with a bare .tflite/.onnx file: a bundle takes raw "
                    f"0-255 RGB, its preprocessing folded into its graph at export. Received: {declared.describe()} for {self.bundle.path}"
                )
            return Preprocessing()
        if declared is not None:
            return declared
        found = (meta.get("file_metadata") or {}).get("preprocessing")
        if found is not None:  # TFLite Model Metadata's NormalizationOptions (tflite_metadata.py)
            return Preprocessing(tuple(found["mean"]), tuple(found["std"]), found.get("color_order", "RGB"), "metadata")
        self.warnings.append(
            f"{self.bundle.model_path.name}: no preprocessing declared or found in the file; feeding raw 0-255 RGB. If the model "
            "expects [0, 1], [-1, 1], mean/std or BGR, say so with --input-range, --mean/--std, --color-order"
        )
        return Preprocessing()

    def _check_against_bundle(self, rt) -> None:
        meta = self.bundle.meta
        if meta.get("bare"):
            pre = self.preprocessing
            if not pre.identity and np.dtype(rt.input.dtype).kind in "iu" and not rt.input.scale:
                # Integer input with no quantization parameters: normalized values have no integer encoding.
                raise BundleError(
                    f"Expected a float input, or an integer one with quantization parameters, for preprocessing "
                    f"{pre.describe()} ({pre.origin}). Received: {rt.input.dtype} input without them in {self.bundle.model_path.name}"
                )
            meta["input"] = rt.input.to_dict() | {"layout": "NHWC", "color_order": pre.color_order,
                                                  "value_range": pre.value_range(), "preprocessing": pre.to_dict()}
            meta["output"] = rt.output.to_dict() | {"activation": "softmax"}
            return
        for side, actual in (("input", rt.input), ("output", rt.output)):
            expected = meta[side].get("shape")
            if expected and [d if d and d > 0 else -1 for d in expected][1:] != [d if d and d > 0 else -1 for d in actual.shape][1:]:
                raise BundleError(
                    f"The model file's {side} shape {actual.shape} does not match bundle.json's {expected} ({self.bundle.model_path})"
                )
            dtype = meta[side].get("dtype")
            if dtype and dtype != actual.dtype:
                raise BundleError(
                    f"The model file's {side} dtype {actual.dtype} does not match bundle.json's {dtype} ({self.bundle.model_path})"
                )

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels

    @property
    def activation(self) -> str:
        return self.bundle.output.get("activation", "softmax")

    def warmup(self) -> None:
        """Run every instance once or twice, and the decoders once, so the first real request is not the slow one."""
        x = np.zeros((1, self.size, self.size, 3), np.uint8)
        for fmt in ("JPEG", "PNG"):  # Pillow imports its format plugins on first use
            buf = io.BytesIO()
            Image.new("RGB", (self.size * 2, self.size * 2)).save(buf, fmt)
            self.decode(buf.getvalue())
        for inst in self.pool.all:
            for _ in range(self.options.warmup_runs):
                inst.run(self.preprocessing.apply(x))
        self.ready = True

    @property
    def sha256(self) -> str:
        return self.bundle.meta["sha256"]

    @property
    def input_dtype(self) -> str:
        return self.pool.first.input.dtype

    @property
    def input_name(self) -> str:
        return (self.bundle.input or {}).get("name") or self.pool.first.input.name

    @property
    def output_name(self) -> str:
        return (self.bundle.output or {}).get("name") or self.pool.first.output.name

    def decode(self, data: bytes, timings: dict | None = None, ctx: RequestContext | None = None) -> np.ndarray:
        return self._decode_opened(self.open(data, ctx), timings)

    def open(self, data: bytes, ctx: RequestContext | None = None):
        """Header only: format, size, scans checked; the deadline armed for the decode to come."""
        t0 = time.perf_counter()
        img = open_image(data, self.options.max_pixels, deadline=ctx.deadline if ctx else None, size=self.size)
        return data, time.perf_counter() - t0, img

    def _decode_opened(self, opened, timings: dict | None = None) -> np.ndarray:
        data, t_open, img = opened
        try:
            arr = to_model_input(img, self.size, fast=self.decode_mode == "fast", timings=timings)
        finally:
            img.close()  # the decoded frame goes now, not when the batch's list of images does (32 x 48 MB)
        if timings is not None:  # reading the header is part of decoding
            timings["decode"] += t_open * 1e3
        return arr

    def check_pixels(self, x: np.ndarray, where: str = "input") -> np.ndarray:
        """A client's pixel tensor -> (N, S, S, 3) in range 0-255, or BadInput naming what was expected."""
        expected = f"(N, {self.size}, {self.size}, 3)"
        if x.ndim != 4 or x.shape[1:] != (self.size, self.size, 3) or x.shape[0] < 1:
            raise BadInput(f"Expected {where} of shape {expected}: N RGB images of {self.size}x{self.size}. Received: shape {list(x.shape)}")
        if x.dtype.kind not in "uif":
            raise BadInput(f"Expected {where} of numbers (uint8 or float pixels 0-255). Received: dtype {x.dtype}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise BadInput(f"Expected {where} pixel values in 0-255. Received: NaN or infinity")
        if x.size and (float(x.min()) < 0 or float(x.max()) > 255):
            raise BadInput(f"Expected {where} pixel values in 0-255. Received: values from {x.min()} to {x.max()}")
        if x.dtype.kind != "f":
            x = x.astype(np.uint8, copy=False)
        return x

    def infer(self, pixels: np.ndarray, ctx: RequestContext | None = None) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, classes) probabilities."""
        deadline = ctx.deadline if ctx else None
        timeout = 30.0
        if deadline is not None:  # a request past its deadline does not take an instance from those that are not
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise DeadlineExceeded()
        x = self.preprocessing.apply(pixels)  # identity (no copy) for a bundle: its graph takes raw pixels
        with self.pool.acquire(timeout) as rt:
            scores = rt.run(x)
        return to_probabilities(scores, self.activation)

    def rank(self, probs: np.ndarray, top_k: int | None = None) -> list[dict]:
        k = len(probs) if top_k is None else max(1, min(top_k, len(probs)))
        order = np.argsort(-probs, kind="stable")[:k]
        return [{"label": self.labels[i], "index": int(i), "score": float(probs[i])} for i in order]

    def probabilities_for_images(self, images: list[bytes], ctx: RequestContext | None = None) -> tuple[np.ndarray, dict]:
        """Encoded images -> (N, classes) probabilities and per-stage milliseconds (summed over images,
        also left in ctx.timings)."""
        ctx = ctx or RequestContext()
        with self.pool.track():
            probs, ctx.timings = self._probabilities_for_images(images, ctx)
        return probs, ctx.timings

    def _probabilities_for_images(self, images: list[bytes], ctx: RequestContext) -> tuple[np.ndarray, dict]:
        t0 = time.perf_counter()
        timings = {"decode": 0.0, "preprocess": 0.0}
        # Every header first (cheap), so the request's peak is known before any pixel is decoded:
        # images are decoded one after another, so the peak is the largest one plus the batch. What
        # Pillow keeps of each header is held for all of them at once: reserved before opening any.
        if len(images) > 1 and (held := sum(header_cost(data) for data in images)):
            ctx.admit(held, f"the headers of {len(images)} images")
        opened = [self.open(data, ctx) for data in images]
        fast = self.decode_mode == "fast"
        peak = max(decode_peak(img, self.size, fast) for _, _, img in opened) + len(images) * self.size * self.size * 3
        biggest = max(opened, key=lambda o: o[2].size[0] * o[2].size[1])[2]
        ctx.admit(peak, f"{len(images)} image(s), the largest {biggest.format} {biggest.size[0]}x{biggest.size[1]} {biggest.mode}")
        if len(images) == 1:  # the common case: no stacking copy
            batch = self._decode_opened(opened[0], timings)[None]
        else:
            batch = np.empty((len(images), self.size, self.size, 3), np.uint8)
            for i in range(len(opened)):
                one: dict = {}
                o, opened[i] = opened[i], None
                batch[i] = self._decode_opened(o, one)
                timings["decode"] += one["decode"]
                timings["preprocess"] += one["preprocess"]
        t1 = time.perf_counter()
        probs = self.infer(batch, ctx)
        t2 = time.perf_counter()
        timings |= {"inference": (t2 - t1) * 1e3, "total": (t2 - t0) * 1e3}
        return probs, timings

    def probabilities_for_pixels(self, x: np.ndarray, ctx: RequestContext | None = None) -> tuple[np.ndarray, dict]:
        ctx = ctx or RequestContext()
        t0 = time.perf_counter()
        with self.pool.track():
            probs = self.infer(x, ctx)
        ms = (time.perf_counter() - t0) * 1e3
        ctx.timings = {"inference": ms, "total": ms}
        return probs, ctx.timings

    def predict_bytes(self, data: bytes, top_k: int | None = 5, ctx: RequestContext | None = None) -> tuple[list[dict], dict]:
        probs, timings = self.probabilities_for_images([data], ctx)
        return self.rank(probs[0], top_k), {k: round(v, 3) for k, v in timings.items()}

    def describe(self) -> dict:
        m = self.bundle.meta
        return {
            "name": self.name, "version": self.version, "format": m.get("format"), "precision": m.get("precision"),
            "labels": self.labels, "input": m.get("input"), "output": m.get("output"), "backend": self.backend,
            "pool_size": self.pool_size, "threads_per_instance": self.threads, "solo_threads": self.solo_threads,
            "source": _without_paths(m.get("source")),
            "preprocessing": self.preprocessing.to_dict() | {"summary": self.preprocessing.describe(),
                                                             "applied_by": "server" if m.get("bare") else "model graph"},
            "warnings": self.warnings,
            "file_metadata": m.get("file_metadata"),  # what a bare .tflite said about itself (TFLite Model Metadata)
            "decode": {"mode": self.decode_mode, "why": self.decode_reason},
            # Which of the bundle's precisions is served, why, and the start-up timings it was chosen by.
            "precision_choice": self.precision_choice.to_dict() | {"available": self.bundle.precisions},
            "verification": m.get("verification"), "sha256": m.get("sha256"), "loaded_at": self.loaded_at,
        }
