"""Errors that reach a person: one line for the CLI, a JSON body with a 4xx status for HTTP."""


class EdgeError(Exception):
    """A problem with a bundle, a model file or a setting: one line, exit code 2."""

    cli_exit_code = 2


class BundleError(EdgeError):
    pass


class ApiError(Exception):
    """A client mistake. `status` is the HTTP status; the message says what was expected and what arrived."""

    def __init__(self, status: int, message: str, **details):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
