"""The Flask app factory: routes are thin; the work is in ModelService.

`create_app(service, settings)` takes a loaded service, so tests can build an
app around any bundle and the CLI can load, verify and warm the model before
the first request is accepted.

Cross-cutting concerns live here as request hooks, one each: API key,
metrics and in-flight gauge, structured access log, CORS.
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

from flask import Flask, g, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from .budget import Budget, current_rss, process_limit
from .errors import ApiError, BundleError, EdgeError
from .metrics import ServerMetrics
from .service import ModelService
from .settings import ServerSettings

log = logging.getLogger("edgeport.server")
access_log = logging.getLogger("edgeport.access")

# Endpoints anyone may call even when an API key is set: probes (a kubelet or
# systemd watchdog has no key) and the static page (it holds no data; its own
# requests carry the key the user types in).
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
PUBLIC_ENDPOINTS = {"v2.health_live", "v2.health_ready", "page.index", "page.favicon"}


class RequestGuard:
    """The server's side of ModelService.guard: memory reserved per request (released when the request
    ends, in create_app's teardown) and the request's deadline. Outside a request: nothing."""

    def __init__(self, budget: Budget, timeout_s: float):
        self.budget = budget
        self.timeout_s = timeout_s

    def admit(self, nbytes: int, what: str) -> None:
        if not has_request_context():
            return
        g.setdefault("reserved", []).append(self.budget.reserve(nbytes, what))

    def deadline(self) -> float | None:
        return g.get("deadline") if has_request_context() else None


class ServerState:
    """What the routes share. `service` is swapped whole on reload, never mutated."""

    def __init__(self, service: ModelService, settings: ServerSettings, load=None):
        self.service = service
        self.settings = settings
        limit, source = (settings.memory_limit, settings.memory_source or "--memory-budget-mb") if settings.memory_limit \
            else process_limit()
        self.budget = Budget.for_process(limit, source, baseline=current_rss())
        self.guard = RequestGuard(self.budget, settings.request_timeout_s)
        service.guard = self.guard
        self.metrics = ServerMetrics(self.budget)
        self.metrics.set_model(service)
        self._reload_lock = threading.Lock()
        # How a reload builds the new service; the CLI passes load_service (verify + warm up).
        self._load = load or (lambda path: _default_load(path, settings))
        self.last_reload: dict | None = None

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
                self.metrics.reloads.inc("error")
                self.last_reload = {"ok": False, "error": str(e), "at": time.time()}
                log.error("reload failed, still serving %s v%s: %s", old.name, old.version, e)
                raise e from None
            new.guard = self.guard
            self.service = new  # the swap: one reference assignment, atomic under the GIL
            previous = _brief(old)
            del old  # in-flight requests still hold it; the last one to finish frees it
            self.settings.bundle = path
            self.metrics.set_model(new)
            self.metrics.reloads.inc("ok")
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

    from .routes import admin, metrics, page, predict, tfserving, v2

    for mod in (predict, tfserving, v2, metrics, page, admin):
        app.register_blueprint(mod.bp)

    expected_key = settings.api_key.encode() if settings.api_key else None
    cors = set(settings.cors_origins)

    @app.before_request
    def _start():
        g.t0 = time.perf_counter()
        given = request.headers.get("X-Request-ID", "")
        # A client's id is echoed and logged: only if it is short and plain.
        g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        st.metrics.in_flight.inc()
        g.in_flight = True
        g.deadline = time.monotonic() + settings.request_timeout_s
        if request.method == "OPTIONS" and cors:
            return None  # a CORS preflight carries no credentials; _finish answers it
        if expected_key is not None and request.endpoint not in PUBLIC_ENDPOINTS:
            given = api_key_of_request()
            # compare_digest: the time taken does not reveal how much of a guess was right.
            if given is None or not hmac.compare_digest(given.encode(), expected_key):
                what = "no key" if given is None else "a key that does not match"
                raise ApiError(401, f"Expected an API key in the X-API-Key header or 'Authorization: Bearer KEY'. Received: {what}")
        if request.content_length:
            # The body is read into memory whole, twice at its peak (werkzeug joins the chunks it read;
            # a multipart body: the form parser's copy and the file's bytes), so it is reserved first.
            copies = 2
            st.guard.admit(request.content_length * copies, f"a {request.content_length:,}-byte body")
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
        resp.headers["X-Request-ID"] = g.get("request_id", "")
        g.status = resp.status_code  # for _account, which runs at teardown
        g.bytes_out = resp.calculate_content_length() or 0
        return resp

    @app.teardown_request
    def _account(exc):
        for n in g.pop("reserved", ()):
            st.budget.release(n)
        if not g.pop("in_flight", False):
            return
        st.metrics.in_flight.dec()
        status = g.get("status", 500)
        seconds = time.perf_counter() - g.t0
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        st.metrics.requests.inc(endpoint, request.method, str(status))
        st.metrics.latency.observe(endpoint, value=seconds)
        if "timings" in g:
            st.metrics.observe_stages(g.timings)
        if settings.access_log:
            # Never the headers or the query string: they may carry the API key or user data.
            access_log.info(json.dumps({
                "ts": round(time.time(), 3), "id": g.request_id, "remote": request.remote_addr, "method": request.method,
                "path": request.path, "endpoint": endpoint, "status": status, "ms": round(seconds * 1e3, 2),
                "bytes_in": request.content_length or 0, "bytes_out": g.get("bytes_out", 0), "error": g.get("error"),
            }, separators=(",", ":")))

    def _error(status: int, message: str, **details):
        g.error = message[:200]
        return jsonify({"error": message, **details}), status

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        details = dict(e.details)
        retry_after = details.pop("retry_after", None)
        resp = _error(e.status, e.message, **details)
        if retry_after is not None:
            return resp[0], e.status, {"Retry-After": str(retry_after)}
        if e.status == 401:
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


def state() -> ServerState:
    from flask import current_app

    return current_app.extensions["edgeport"]
