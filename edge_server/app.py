"""The Flask app factory: routes are thin; the work is in ModelService.

`create_app(service, settings)` takes a loaded service, so tests can build an
app around any bundle and the CLI can load, verify and warm the model before
the first request is accepted.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from .errors import ApiError
from .service import ModelService
from .settings import ServerSettings

log = logging.getLogger("edgeport.server")


class ServerState:
    """What the routes share. `service` is swapped whole on reload, never mutated."""

    def __init__(self, service: ModelService, settings: ServerSettings):
        self.service = service
        self.settings = settings
        self.lock = threading.Lock()

    def model(self, name: str | None = None) -> ModelService:
        svc = self.service  # one read: a reload mid-request cannot mix two models
        if name is not None and name != svc.name:
            raise ApiError(404, f"Unknown model. Expected: {svc.name!r}. Received: {name!r}")
        return svc


def create_app(service: ModelService, settings: ServerSettings) -> Flask:
    app = Flask("edge_server")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["edgeport"] = ServerState(service, settings)

    from .routes import health, predict

    app.register_blueprint(predict.bp)
    app.register_blueprint(health.bp)

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        return jsonify({"error": e.message, **e.details}), e.status

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        messages = {
            404: "No such endpoint. See GET / for the API.",
            405: f"Method not allowed here. Allowed: {', '.join(sorted(getattr(e, 'valid_methods', None) or []))}",
            413: f"Expected a request body of at most {settings.max_body_bytes:,} bytes. Received: more",
        }
        return jsonify({"error": messages.get(e.code, e.description)}), e.code

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unhandled error")
        return jsonify({"error": f"internal error: {type(e).__name__}"}), 500

    return app


def state() -> ServerState:
    from flask import current_app

    return current_app.extensions["edgeport"]
