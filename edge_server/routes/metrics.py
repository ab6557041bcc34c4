"""`GET /metrics`: Prometheus text exposition (see edge_server/metrics.py)."""

from __future__ import annotations

from flask import Blueprint, Response

from ..app import state

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics():
    m = state().metrics
    return Response(m.render(), content_type=m.CONTENT_TYPE)
