"""`POST /admin/reload`: swap in a new bundle without dropping a request.

Off unless the server has an API key: an admin endpoint anyone on the
network could call would let them stall the server with reloads.
"""

from __future__ import annotations

from pathlib import Path

from flask import jsonify, request

from edge_core.errors import EdgeError

from ..errors import ApiError
from .table import Route

MAX_NAME = 1024  # characters in a reload path; a file system's own limit is 4096, a real bundle path far less
MAX_PART = 255  # characters in one component (NAME_MAX)


def check_name(path: str) -> None:
    """Refuse what the file system would choke on before it is asked: a NUL byte made Path.resolve()
    raise ValueError (500), 5,000 characters OSError "File name too long" (500)."""
    shown = f"{path[:60]!r}{'...' if len(path) > 60 else ''}"
    if "\x00" in path:
        raise ApiError(400, f"Expected a bundle path without NUL bytes. Received: {shown}")
    if len(path) > MAX_NAME or any(len(part) > MAX_PART for part in path.split("/")):
        raise ApiError(400, f"Expected a bundle path of at most {MAX_NAME} characters, {MAX_PART} per folder name. "
                            f"Received: {len(path):,} characters ({shown})")


def confined(path: str, root: Path) -> Path:
    """A reload may only name a bundle beside the one being served: even with the key, the
    admin API must not become a way to make the server open arbitrary files ("../../etc")."""
    check_name(path)
    try:
        resolved = (root / path).resolve()  # an absolute `path` replaces root; resolve() follows links and ".."
    except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: a symlink loop on older Pythons
        raise ApiError(400, f"Expected a bundle path that can be resolved. Received: {path[:60]!r} ({type(e).__name__})") from None
    if not resolved.is_relative_to(root):
        # Not the absolute folder: answers never show the server's file system layout.
        raise ApiError(403, f"Expected a bundle inside the served bundle's folder ({root.name!r}). Received: {path[:60]!r}")
    return resolved


def public(message: str, root: Path) -> str:
    """A message with the bundles' folder shown relative to itself: no absolute paths in answers."""
    return message.replace(str(root) + "/", "").replace(str(root), ".")


def reload(st):
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
    root = Path(st.settings.bundle).resolve().parent
    if bundle is not None:
        bundle = confined(bundle, root)
    try:
        result = st.reload(bundle)
    except EdgeError as e:
        # Not the client's mistake, but not the server's either: the new bundle is bad. 422 says
        # "understood, could not do it"; the old model keeps serving.
        cur = st.service
        raise ApiError(422, f"Reload failed; still serving {cur.name!r} version {cur.version}. {public(str(e), root)}",
                       reloaded=False, serving={"name": cur.name, "version": cur.version, "sha256": cur.sha256}) from None
    return jsonify({"reloaded": True, **result})


ROUTES = (
    Route("/admin/reload", reload, ("POST",)),
)
