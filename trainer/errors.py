class TrainerError(Exception):
    """A problem with the user's data or options: shown as one line, exit code 2."""

    cli_exit_code = 2
