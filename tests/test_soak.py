"""A short, bounded soak: mixed valid and hostile traffic with a hot reload mid-run.

The full 60 s / 16 client run is `python benchmarks/soak.py BUNDLE` (figures in the README).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from soak import soak  # noqa: E402


def test_short_soak_has_only_expected_statuses_and_no_leaked_files(int8_bundle):
    result = soak(int8_bundle, seconds=6, clients=6, log=lambda m: None)
    assert result["unexpected"] == {}, result["by_kind"]
    assert result["reload"]["status"] == 200
    assert result["requests"] > 100
    # The previous model's interpreters are released after the reload: a leak here once kept
    # the first model's files open for the server's lifetime.
    assert result["after"]["fds"] <= result["before"]["fds"], (result["before"], result["after"])
