"""`POST /admin/reload`: swap in a new bundle without dropping a request.

Off unless the server has an API key: an admin endpoint anyone on the
network could call would let them stall the server with reloads.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, jsonify, request

from ..app import state
from ..errors import ApiError, EdgeError

bp = Blueprint("admin", __name__)


def confined(path: str, root: Path) -> Path:
    """A reload may only name a bundle beside the one being served: even with the key, the
    admin API must not become a way to make the server open arbitrary files ("../../etc")."""
    resolved = (root / path).resolve()  # an absolute `path` replaces root; resolve() follows links and ".."
    if not resolved.is_relative_to(root):
        raise ApiError(403, f"Expected a bundle inside {root}. Received: {path!r}")
    return resolved


@bp.post("/admin/reload")
def reload():
    st = state()
    if not st.settings.api_key:
        raise ApiError(404, "Admin endpoints are off. Expected: a server started with --api-key-file. Received: a server without a key")
    bundle = None
    if request.content_length:
        try:
            body = request.get_json(silent=True)
        except RecursionError:  # silent=True covers malformed JSON, not JSON nested thousands deep
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("bundle", ""), str):
            raise ApiError(400, 'Expected no body, or JSON {"bundle": "/path/to/bundle"}. Received: something else')
        bundle = body.get("bundle") or None
    if bundle is not None:
        bundle = confined(bundle, Path(st.settings.bundle).resolve().parent)
    try:
        result = st.reload(bundle)
    except EdgeError as e:
        # Not the client's mistake, but not the server's either: the new bundle is bad. 422 says
        # "understood, could not do it"; the old model keeps serving.
        cur = st.service
        raise ApiError(422, f"Reload failed; still serving {cur.name!r} version {cur.version}. {e}",
                       reloaded=False, serving={"name": cur.name, "version": cur.version, "sha256": cur.sha256}) from None
    return jsonify({"reloaded": True, **result})
