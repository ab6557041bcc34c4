"""The Flask app factory: routes are thin; the work is in ModelService.

`create_app(service, settings)` takes a loaded service, so tests can build an
app around any bundle and the CLI can load, verify and warm the model before
the first request is accepted.

Cross-cutting concerns live here as request hooks, one each: API key,
metrics and in-flight gauge, structured access log, CORS. The first hook
makes the request's context (context.py: deadline, memory admission, stage
timings); routes hand it to the service, the last hook releases and counts it.
Route modules are handed the server state when registered (routes/table.py)
and never import this module. Errors from the ground floor become statuses
through the one table in errors.py.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
import uuid
from pathlib import Path

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from edge_core.errors import BundleError, EdgeError, RequestError
from edge_core.service import ModelService

from .budget import Budget, current_rss, process_limit
from .context import ServerRequest
from .errors import ApiError, http_status
from .metrics import ServerMetrics
from .routes import admin, metrics, page, predict, tfserving, v2
from .routes.table import PUBLIC_PATHS, blueprint
from .settings import ServerSettings

log = logging.getLogger("edgeport.server")
access_log = logging.getLogger("edgeport.access")

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Blueprint name -> the module declaring its routes, in registration order.
ROUTE_MODULES = {"predict": predict, "tfserving": tfserving, "v2": v2, "metrics": metrics, "page": page, "admin": admin}


class ServerState:
    """What the routes share. `service` is swapped whole on reload, never mutated."""

    def __init__(self, service: ModelService, settings: ServerSettings, load=None):
        self.service = service
        self.settings = settings
        limit, source = (settings.memory_limit, settings.memory_source or "--memory-budget-mb") if settings.memory_limit \
            else process_limit()
        self.budget = Budget.for_process(limit, source, baseline=current_rss())
        self.metrics = ServerMetrics(self.budget)
        self.metrics.set_model(service)
        self._reload_lock = threading.Lock()
        # How a reload builds the new service; the CLI passes load_service (verify + warm up).
        self._load = load or (lambda path: _default_load(path, settings))
        self.last_reload: dict | None = None

    def request(self) -> ServerRequest:
        """The context of the request being handled: made by the app's first hook, handed on to the service."""
        return g.edgeport_request

    def model(self, name: str | None = None, version: str | None = None) -> ModelService:
        svc = self.service  # one read: a reload mid-request cannot mix two models
        if name is not None and name != svc.name:
            raise ApiError(404, f"Unknown model. Expected: {svc.name!r}. Received: {name!r}")
        if version is not None and version != svc.version:
            raise ApiError(404, f"Unknown version of model {name!r}. Expected: {svc.version!r}. Received: {version!r}")
        return svc

    def reload(self, bundle: str | Path | None = None) -> dict:
        """Load the new bundle beside the old one, verify and warm it, then swap.

        In-flight requests keep the service object they already read (see
        `model`), so they finish on the old model; the old one is freed when
        the last of them lets go. A failure leaves the old one serving.
        """
        with self._reload_lock:  # two reloads at once would only race to the same end
            old = self.service
            path = Path(bundle) if bundle else self.settings.bundle
            t0 = time.perf_counter()
            try:
                new = self._load(path)
            except Exception as e:  # noqa: BLE001 - whatever a bad bundle raises, it is counted and the old model serves on
                if not isinstance(e, EdgeError):
                    log.exception("reload raised")
                    e = BundleError(f"Expected a loadable bundle. Received: one that fails with {type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:200] if str(e) else ''}")
                self.metrics.reloads.labels("error").inc()
                self.last_reload = {"ok": False, "error": str(e), "at": time.time()}
                log.error("reload failed, still serving %s v%s: %s", old.name, old.version, e)
                raise e from None
            self.service = new  # the swap: one reference assignment, atomic under the GIL
            previous = _brief(old)
            del old  # in-flight requests still hold it; the last one to finish frees it
            self.settings.bundle = path
            self.metrics.set_model(new)
            self.metrics.reloads.labels("ok").inc()
            ms = round((time.perf_counter() - t0) * 1e3, 1)
            self.last_reload = {"ok": True, "at": time.time(), "load_ms": ms}
            log.info("reloaded %s v%s (%s) in %.0f ms", new.name, new.version, new.sha256[:12], ms)
            return {"model": _brief(new), "previous": previous, "load_ms": ms}


def _brief(svc: ModelService) -> dict:
    return {"name": svc.name, "version": svc.version, "sha256": svc.sha256}


def _default_load(path: Path, settings: ServerSettings) -> ModelService:
    svc = ModelService.from_path(path, settings.labels, settings.service)
    svc.warmup()
    return svc


def api_key_of_request() -> str | None:
    key = request.headers.get("X-API-Key")
    if key is None:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            key = token.strip()
    return key


def create_app(service: ModelService, settings: ServerSettings, load=None) -> Flask:
    app = Flask("edge_server", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.json.compact = True
    st = ServerState(service, settings, load)
    app.extensions["edgeport"] = st
    for name, module in ROUTE_MODULES.items():
        app.register_blueprint(blueprint(name, module.ROUTES, st))
    public_endpoints = {rule.endpoint for rule in app.url_map.iter_rules() if rule.rule in PUBLIC_PATHS}

    expected_key = settings.api_key.encode() if settings.api_key else None
    cors = set(settings.cors_origins)

    @app.before_request
    def _start():
        given = request.headers.get("X-Request-ID", "")
        # A client's id is echoed and logged: only if it is short and plain.
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        g.edgeport_request = ctx = ServerRequest(st.budget, settings.request_timeout_s, request_id)
        st.metrics.in_flight.inc()
        if request.method == "OPTIONS" and cors:
            return None  # a CORS preflight carries no credentials; _finish answers it
        if expected_key is not None and request.endpoint not in public_endpoints:
            given = api_key_of_request()
            # compare_digest: the time taken does not reveal how much of a guess was right.
            if given is None or not hmac.compare_digest(given.encode(), expected_key):
                what = "no key" if given is None else "a key that does not match"
                raise ApiError(401, f"Expected an API key in the X-API-Key header or 'Authorization: Bearer KEY'. Received: {what}")
        if request.content_length:
            # The body is read into memory whole, twice at its peak (werkzeug joins the chunks it read;
            # a multipart body: the form parser's copy and the file's bytes), so it is admitted first.
            copies = 2
            ctx.admit(request.content_length * copies, f"a {request.content_length:,}-byte body")
        return None

    @app.after_request
    def _finish(resp):
        origin = request.headers.get("Origin")
        if origin and origin in cors:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Vary"] = "Origin"
            if request.method == "OPTIONS":
                resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                resp.headers["Access-Control-Allow-Headers"] = "Content-Type, X-API-Key, Authorization, Inference-Header-Content-Length"
                resp.headers["Access-Control-Max-Age"] = "600"
        ctx = g.get("edgeport_request")
        if ctx is not None:  # for _account, which runs at teardown
            resp.headers["X-Request-ID"] = ctx.request_id
            ctx.status = resp.status_code
            ctx.bytes_out = resp.calculate_content_length() or 0
        return resp

    @app.teardown_request
    def _account(exc):
        ctx = g.pop("edgeport_request", None)
        if ctx is None:
            return
        ctx.close()
        st.metrics.in_flight.dec()
        seconds = time.perf_counter() - ctx.started
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        st.metrics.observe_request(endpoint, request.method, ctx.status, seconds, ctx.timings)
        if settings.access_log:
            # Never the headers or the query string: they may carry the API key or user data.
            access_log.info(json.dumps({
                "ts": round(time.time(), 3), "id": ctx.request_id, "remote": request.remote_addr, "method": request.method,
                "path": request.path, "endpoint": endpoint, "status": ctx.status, "ms": round(seconds * 1e3, 2),
                "bytes_in": request.content_length or 0, "bytes_out": ctx.bytes_out, "error": ctx.error,
            }, separators=(",", ":")))

    def _error(status: int, message: str, **details):
        ctx = g.get("edgeport_request")
        if ctx is not None:
            ctx.error = message[:200]
        return jsonify({"error": message, **details}), status

    @app.errorhandler(RequestError)
    def _request_error(e: RequestError):
        status = http_status(e)
        details = dict(e.details)
        retry_after = details.pop("retry_after", None)
        resp = _error(status, e.message, **details)
        if retry_after is not None:
            return resp[0], status, {"Retry-After": str(retry_after)}
        if status == 401:
            return resp[0], 401, {"WWW-Authenticate": 'Bearer realm="edgeport"'}
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        if request.method == "OPTIONS" and e.code == 405 and cors:
            return "", 204  # preflight for a route that exists under other methods
        messages = {
            404: "No such endpoint. See GET / for the page and README for the API. Received: " + request.path,
            405: f"Method not allowed here. Allowed: {', '.join(sorted(getattr(e, 'valid_methods', None) or []))}. Received: {request.method}",
            413: f"Expected a request body of at most {settings.max_body_bytes:,} bytes. Received: "
            + (f"{request.content_length:,} bytes" if request.content_length else "more (a chunked body)"),
        }
        body, status = _error(e.code, messages.get(e.code, e.description))
        if e.code == 405:  # RFC 9110: a 405 must say which methods are allowed
            return body, status, {"Allow": ", ".join(sorted(getattr(e, "valid_methods", None) or []))}
        return body, status

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unhandled error")
        return _error(500, f"internal error: {type(e).__name__}")

    return app
