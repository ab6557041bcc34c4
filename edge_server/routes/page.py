"""`GET /`: a small self-contained page to try the model; `GET /model`: the details it shows."""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, jsonify

from ..app import state

bp = Blueprint("page", __name__)

# Everything is inline (no CDN: a device is often offline); nothing else may load.
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob: data:; connect-src 'self'"


@bp.get("/")
def index():
    html = resources.files("edge_server").joinpath("static/index.html").read_bytes()
    return Response(html, content_type="text/html; charset=utf-8", headers={"Content-Security-Policy": CSP})


@bp.get("/favicon.ico")
def favicon():
    return Response(status=204)


@bp.get("/model")
def model():
    return jsonify(state().model().describe())


@bp.get("/openapi.json")
def openapi():
    from ..openapi import openapi_document  # the document is built per request: a reload changes the model's name and labels

    return jsonify(openapi_document(state().model()))
