"""Errors the ground floor raises. Each says what was expected and what arrived; none knows HTTP.

Two families: `EdgeError` for a problem with a bundle, a model file or a setting (the CLI prints
one line and exits 2), and `RequestError` for a problem with what a caller sent or with the capacity
to serve it now. The server maps each `RequestError` class to a status in one table
(edge_server/errors.py); the trainer and exporter read `message`.
"""


class EdgeError(Exception):
    """A problem with a bundle, a model file or a setting: one line, exit code 2."""

    cli_exit_code = 2


class BundleError(EdgeError):
    pass


class RequestError(Exception):
    """What a caller sent cannot be served. `details` are extra facts for the answer (e.g. retry_after seconds)."""

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details


class BadInput(RequestError):
    """Malformed input: a pixel tensor of the wrong shape or range."""


class BadImage(BadInput):
    """Image bytes that are empty, cut short or fail to decode."""


class UnsupportedImage(RequestError):
    """An image of a format outside the allow-list."""


class TooLarge(RequestError):
    """More than this process can ever take at once, however long the caller waits."""


class ImageTooLarge(TooLarge):
    """An image whose header claims more pixels than the limit."""


class Busy(RequestError):
    """No capacity now (memory, model instances); the same request may succeed later."""


class DeadlineExceeded(Busy):
    def __init__(self):
        super().__init__("Expected the request to finish within the server's deadline. Received: an image that "
                         "took longer to decode; retry later or send a smaller image", retry_after=2)
