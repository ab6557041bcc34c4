"""Progress bars only where someone watches (stderr a terminal, or --progress); a line every so often otherwise."""

import io
import re
import sys

import pytest

from exporter import console


@pytest.fixture
def no_switch(monkeypatch):
    # setenv, not delenv: monkeypatch then restores each switch as it was, so one the test's code sets
    # (quiet_tensorflow) does not reach the next test in this process. "" means unset to the readers.
    monkeypatch.setenv(console.PROGRESS_ENV, "")
    monkeypatch.setenv(console.VERBOSE_ENV, "")


def test_no_terminal_no_bar_but_a_line_every_n(no_switch, capsys):
    lines = []
    assert list(console.steps(range(250), "decoding", lines.append, every=100)) == list(range(250))
    assert lines == ["decoding: 100/250 images", "decoding: 200/250 images", "decoding: 250/250 images"]
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_a_bar_and_no_lines(no_switch, monkeypatch):
    tty = io.StringIO()
    tty.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", tty)
    lines = []
    assert list(console.steps(range(20), "calibration", lines.append, every=5)) == list(range(20))
    assert lines == [] and re.search(r"calibration: +\d+%\|", tty.getvalue())


def test_progress_switch_forces_bars_and_zero_forbids_them(no_switch, monkeypatch, capsys):
    monkeypatch.setenv(console.PROGRESS_ENV, "1")
    list(console.steps(range(3), "verify: exported"))
    assert re.search(r"verify: exported: +\d+%\|.*0/3", capsys.readouterr().err)
    callbacks, verbose = console.fit_display()
    assert verbose == 0 and [type(c).__name__ for c in callbacks] == ["TqdmCallback"]  # Keras' own display off: no doubled epochs
    capsys.readouterr()
    monkeypatch.setenv(console.PROGRESS_ENV, "0")
    assert console.fit_display() == ([], 2)  # one line per epoch, for logs
    list(console.steps(range(3), "x"))
    assert capsys.readouterr().err == ""


def test_cli_flags_set_the_switches_before_or_after_the_command(no_switch, monkeypatch):
    import os

    from edge_server.cli import build_parser, quiet_tensorflow

    for argv in (["--progress", "--verbose", "bench", "b"], ["bench", "b", "--progress", "--verbose"]):
        args = build_parser().parse_args(argv)
        assert args.progress and args.verbose
    args = build_parser().parse_args(["bench", "b"])
    assert not args.progress and not args.verbose
    quiet_tensorflow(verbose=True, progress=True)
    assert os.environ[console.PROGRESS_ENV] == "1" and console.verbose()
