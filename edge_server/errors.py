"""HTTP errors: the one table from the ground floor's typed errors to statuses, and ApiError for
what only HTTP can get wrong (an unknown model name, a missing key, a malformed JSON body)."""

from __future__ import annotations

from edge_core.errors import BadInput, Busy, RequestError, TooLarge, UnsupportedImage


class ApiError(RequestError):
    """A client mistake the routes find themselves. `status` is the HTTP status; the message says
    what was expected and what arrived."""

    def __init__(self, status: int, message: str, **details):
        super().__init__(message, **details)
        self.status = status


# edge_core's request errors -> HTTP status; the most specific class listed wins (looked up along the MRO).
STATUS = {
    BadInput: 400,
    UnsupportedImage: 415,
    TooLarge: 413,
    Busy: 503,
    RequestError: 400,  # a request error of no more specific kind is the caller's mistake
}


def http_status(e: RequestError) -> int:
    if isinstance(e, ApiError):
        return e.status
    return next(STATUS[cls] for cls in type(e).__mro__ if cls in STATUS)
