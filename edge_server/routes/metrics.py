"""`GET /metrics`: Prometheus text exposition (see edge_server/metrics.py)."""

from __future__ import annotations

from flask import Response

from .table import Route


def metrics(st):
    m = st.metrics
    return Response(m.render(), content_type=m.CONTENT_TYPE)


ROUTES = (
    Route("/metrics", metrics),
)
