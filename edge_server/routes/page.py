"""`GET /`: a small self-contained page to try the model; `GET /model`: the details it shows."""

from __future__ import annotations

from importlib import resources

from flask import Response, jsonify

from .table import Route

# Everything is inline (no CDN: a device is often offline); nothing else may load.
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob: data:; connect-src 'self'"


def index(st):
    html = resources.files("edge_server").joinpath("static/index.html").read_bytes()
    return Response(html, content_type="text/html; charset=utf-8", headers={"Content-Security-Policy": CSP})


def favicon(st):
    return Response(status=204)


def model(st):
    return jsonify(st.model().describe())


def openapi(st):
    from ..openapi import openapi_document  # the document is built per request: a reload changes the model's name and labels

    return jsonify(openapi_document(st.model()))


ROUTES = (
    Route("/", index),
    Route("/favicon.ico", favicon),
    Route("/model", model),
    Route("/openapi.json", openapi),
)
