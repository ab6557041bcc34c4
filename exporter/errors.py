class ExportError(Exception):
    """A problem with the export request or its result: one line, exit code 2."""

    cli_exit_code = 2


class VerificationError(ExportError):
    """The exported model disagrees with the Keras model more than allowed; nothing was published."""

    cli_exit_code = 3
