"""What a route module declares, and the one list of routes answered without the API key."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from flask import Blueprint

# Paths anyone may call even when an API key is set: probes (a kubelet or systemd watchdog has no
# key) and the static page (it holds no data; its own requests carry the key the user types in).
# The app's key check and the OpenAPI document's `security` both read this.
PUBLIC_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/", "/favicon.ico"})


@dataclass(frozen=True)
class Route:
    rule: str
    view: Callable  # view(state, **url_args)
    methods: tuple[str, ...] = ("GET",)


def versioned(rule: str, view: Callable, methods: tuple[str, ...] = ("GET",)) -> tuple[Route, Route]:
    """A model route with and without /versions/<version>: `rule` holds {v} where that part goes."""
    return Route(rule.format(v=""), view, methods), Route(rule.format(v="/versions/<version>"), view, methods)


def blueprint(name: str, routes: tuple[Route, ...], state) -> Blueprint:
    """The routes as a blueprint whose views are handed `state` (the app's ServerState)."""
    bp = Blueprint(name, __name__)
    bound: dict[Callable, Callable] = {}  # one view object per endpoint: Flask refuses two for one name
    for r in routes:
        view = bound.setdefault(r.view, partial(r.view, state))
        bp.add_url_rule(r.rule, endpoint=r.view.__name__, view_func=view, methods=list(r.methods))
    return bp
