"""Open Inference Protocol (KServe v2) health and metadata endpoints."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..app import state

bp = Blueprint("health", __name__)


@bp.get("/v2/health/live")
def live():
    return jsonify({"live": True})


@bp.get("/v2/health/ready")
def ready():
    ok = state().service.ready
    return jsonify({"ready": ok}), (200 if ok else 503)
