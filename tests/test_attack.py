"""A short run of benchmarks/attack.py: the hostile mix beside valid traffic, the server under a 256 MiB cgroup cap."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from attack import cgroup_support  # noqa: E402

SUPPORTED, WHY = cgroup_support()


@pytest.mark.skipif(not SUPPORTED, reason=f"no writable memory cgroup to cap the server: {WHY}")
def test_a_short_attack_under_a_256_mib_cap_kills_nothing_and_valid_clients_are_answered(int8_bundle, heldout_dir, tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "attack.py"), str(int8_bundle), "--images", str(heldout_dir), "--quick",
                           "--slow", "200", "--workdir", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=240)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    run = result["runs"][0]
    assert run["cap_mib"] == 256, run
    assert run["oom_kills"] == 0 and not run["server_exits"], run
    assert run["valid_correct_share"] >= 0.99, run
    assert run["unexpected"] == 0, {k: v for k, v in run["attacks"].items() if "UNEXPECTED" in v}
