"""Load, verify and warm the model, then serve it under waitress (a production WSGI server that runs on ARM)."""

from __future__ import annotations

import logging
import time

from .app import create_app
from .service import ModelService
from .settings import ServerSettings

log = logging.getLogger("edgeport.server")


def load_service(settings: ServerSettings) -> ModelService:
    svc = ModelService.from_path(settings.bundle, settings.labels, settings.service)
    svc.warmup()
    return svc


def serve(settings: ServerSettings) -> None:
    from waitress import serve as waitress_serve

    t0 = time.perf_counter()
    svc = load_service(settings)
    app = create_app(svc, settings)
    http_threads = settings.http_threads or svc.pool_size * 2 + 2
    print(
        f"edgeport: serving {svc.name!r} ({svc.bundle.format}/{svc.bundle.meta.get('precision')}, {svc.backend}, "
        f"{svc.pool_size} instances x {svc.threads} threads) on http://{settings.host}:{settings.port} "
        f"- ready in {time.perf_counter() - t0:.2f} s",
        flush=True,
    )
    waitress_serve(app, host=settings.host, port=settings.port, threads=http_threads, ident="edgeport", _quiet=True)
