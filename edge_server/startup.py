"""What a server process does before it serves: load, verify and warm the model, set up logging, and say
what it serves. Shared by the single process (serve.py) and each supervised worker (worker.py)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from devices.api_key import is_loopback
from edge_core.service import ModelService

from .settings import ServerSettings

# Preprocessing.origin -> how the start-up line says where a bare file's preprocessing came from
PREPROCESSING_ORIGINS = {"declared": "declared, applied by the server", "metadata": "from the file's TFLite Model Metadata, applied by the server",
                         "none": "nothing declared or found: raw pixels"}


def load_service(settings: ServerSettings, bundle: Path | None = None) -> ModelService:
    """Load and verify (sha256, shapes and dtypes against bundle.json), then warm up: ready means warm."""
    svc = ModelService.from_path(bundle or settings.bundle, settings.labels, settings.service)
    svc.warmup()
    return svc


def configure_logging() -> None:
    # Access lines are JSON already: printed as they are, one per line, on stderr.
    for name, fmt in (("edgeport.access", "%(message)s"), ("edgeport.server", "edgeport: %(levelname)s: %(message)s")):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(fmt))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def exposure_warning(settings: ServerSettings) -> str | None:
    """A warning for a server anyone on the network can call without a key, or None."""
    if is_loopback(settings.host) or settings.api_key:
        return None
    return (f"edgeport: warning: listening on {settings.host} without an API key: anyone who can reach this "
            "address can use the model. Add --api-key-file FILE, or bind 127.0.0.1 behind a reverse proxy.")


def describe(svc: ModelService, settings: ServerSettings, seconds: float, processes: str = "") -> str:
    """The start-up lines: what is served, how, where; then one line per warning (a bare file whose
    preprocessing is a guess)."""
    lines = [
        (f"edgeport: serving {svc.name!r} ({svc.bundle.format}/{svc.bundle.meta.get('precision')}, {svc.backend}, {processes}"
         f"{svc.pool_size} instances x {svc.threads} threads"
         f"{f' + 1 x {svc.solo_threads} for a request that arrives alone' if svc.solo_threads else ''}) on http://{settings.host}:{settings.port} "
         f"- ready in {seconds:.2f} s"),
        *([f"edgeport: precision {svc.precision_choice.summary()}"] if len(svc.bundle.precisions) > 1 else []),
        f"edgeport: decoding {svc.decode_mode} ({svc.decode_reason})",
        (f"edgeport: preprocessing {svc.preprocessing.describe()} "
         f"({'in the model graph' if not svc.bundle.meta.get('bare') else PREPROCESSING_ORIGINS[svc.preprocessing.origin]})"),
    ]
    return "\n".join(lines + [f"edgeport: warning: {warning}" for warning in svc.warnings])


def decide_precision_once(settings: ServerSettings) -> ServerSettings:
    """For supervised workers: the precision of a multi-precision bundle, chosen once, before they fork.

    One choice, not one per worker: every worker then serves the same model file, so an answer does not
    depend on which worker took the request, and the timing runs with the cores to itself instead of N
    workers timing at once and slowing each other. It runs in a short-lived child: the supervisor loads
    no model (supervisor.py). A worker reloading another bundle later times that one itself.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from dataclasses import replace

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        decided = pool.submit(_decide, settings).result()
    if decided is None:
        return settings
    return replace(settings, service=replace(settings.service, precision_decided=decided))


def _decide(settings: ServerSettings) -> dict | None:
    from edge_core.bundle import load_bundle
    from edge_core.service import choose_precision

    choice = choose_precision(load_bundle(settings.bundle, settings.labels), settings.service)
    if choice.timings_ms is None:
        return None  # a single precision or a pin: every worker reads the same
    return choice.to_dict() | {"reason": f"{choice.reason}, timed once for every worker"}
