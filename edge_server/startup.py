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
        f"edgeport: decoding {svc.decode_mode} ({svc.decode_reason})",
        (f"edgeport: preprocessing {svc.preprocessing.describe()} "
         f"({'in the model graph' if not svc.bundle.meta.get('bare') else PREPROCESSING_ORIGINS[svc.preprocessing.origin]})"),
    ]
    return "\n".join(lines + [f"edgeport: warning: {warning}" for warning in svc.warnings])
