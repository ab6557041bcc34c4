"""The switches for what long steps show, shared by every command: set in the environment by the
`edgeport` command line (`--progress`, `--verbose`) so they reach every package and subprocess."""

from __future__ import annotations

import os

PROGRESS_ENV = "EDGEPORT_PROGRESS"  # "1": bars even when stderr is not a terminal; "0": never
VERBOSE_ENV = "EDGEPORT_VERBOSE"  # "1": TensorFlow's start-up lines and Python warnings as TensorFlow prints them


def asked_progress() -> bool | None:
    """True or False when the user said (--progress, EDGEPORT_PROGRESS=0/1); None: the caller decides."""
    asked = os.environ.get(PROGRESS_ENV, "")
    return asked == "1" if asked in ("0", "1") else None
