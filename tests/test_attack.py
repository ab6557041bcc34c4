"""Attacks a-e of benchmarks/attack.py in short: the same shape with a quarter of the clients and connections
for 3 s (then 1.5 s of checking), each against `edgeport serve --processes 2` in a memory cgroup of its own, under the cap the attack
was found under. Goals as in the benchmark: the supervisor never dies, valid requests are answered correctly
during the attack (99%; 95% under the connection floods) and all of them from 2 s after it ends."""

import sys
from pathlib import Path

import pytest

from edge_server.budget import MiB, parse_size

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import attack

SUPPORTED, WHY = attack.cgroup_support()
pytestmark = pytest.mark.skipif(not SUPPORTED, reason=f"no writable memory cgroup to cap the server: {WHY}")

CASES = {
    "a-progressive-jpeg": "256M",  # 16 clients of a 188 kB progressive 16 Mpx JPEG: OOM in 0.3 s
    "b-decode-mix": "600M",  # RGBA/LA PNGs, progressive JPEGs, a 34-byte WebP, zTXt/iCCP/ICC/APP1 metadata
    "c-stalled-headers": "256M",  # 1,000 connections stalled with 200 kB headers: +502 MB, OOM in ~5 s
    "c-idle-keepalive": "256M",  # keep-alives past the connection limit locked valid clients out
    "d-large-bodies": "256M",  # legal 19 MiB bodies: the allocator kept the memory, 503 for minutes
    "e-held-bodies": "600M",  # 20 MiB bodies with the last byte held back spooled 1.05 GB to disk
    "mix": "256M",  # JSON and decompression bombs, malformed HTTP, slowloris
}


@pytest.mark.parametrize("name", list(CASES))
def test_attack_leaves_the_supervisor_up_and_valid_clients_answered(name, int8_bundle, heldout_dir, tmp_path):
    args = attack.scenario_args(int8_bundle, tmp_path, heldout_dir, seconds=3.0, scale=0.25, check_s=1.5)
    row = attack.run_scenario(args, name, parse_size(CASES[name]))
    assert row["cap_mib"] == parse_size(CASES[name]) // MiB, row
    assert row["supervisor_alive"] and not row["supervisor_exits"] and row["supervisor_oom_kills"] == 0, row
    assert row["valid_after"] and row["valid_after_share"] == 1.0, row
    assert row["valid_during_share"] >= (0.95 if attack.SCENARIOS[name].flood else 0.99), row
    assert row["spooled_peak_mib"] <= 4 * 20, row  # spool_bytes: 4 x the largest body, whatever the attack
