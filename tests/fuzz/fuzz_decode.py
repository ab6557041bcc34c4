"""Long fuzz run on demand: the image decoder, and (with --http) the JSON/tensor parsers.

    python tests/fuzz/fuzz_decode.py --seconds 600           # edge_core.imageio only, no model needed
    python tests/fuzz/fuzz_decode.py --seconds 600 --http BUNDLE   # also /predict, /v1 and /v2 parsers

Runs the strategies of tests/fuzz/strategies.py in rounds of random
(not derandomized) hypothesis examples until the time is up. Invariant:
success or a RequestError / JSON error with a 4xx status. The first violation
stops the run and prints the exact input: pin it as a regression test in
tests/test_fuzz.py, then fix edge_server.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).parent))
import strategies as S  # noqa: E402

from edge_core.errors import RequestError  # noqa: E402
from edge_core.imageio import decode_to_array  # noqa: E402
from edge_server.errors import http_status  # noqa: E402

ROUND = settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def decoder_round() -> int:
    n = 0

    @ROUND
    @given(data=S.image_bytes)
    def run(data):
        nonlocal n
        n += 1
        for fast in (False, True):
            try:
                x = decode_to_array(data, S.SIZE, 1_000_000, fast=fast)
            except RequestError as e:
                assert 400 <= http_status(e) < 500, (http_status(e), e.message)
                continue
            assert x.shape == (S.SIZE, S.SIZE, 3)

    run()
    return n


def http_rounds(bundle: str):
    from edge_core.service import ModelService, ServiceOptions
    from edge_server.app import create_app
    from edge_server.settings import ServerSettings

    svc = ModelService.from_path(bundle, options=ServiceOptions(pool_size=1, warmup_runs=0, max_pixels=1_000_000))
    svc.ready = True
    client = create_app(svc, ServerSettings(bundle=Path(bundle), access_log=False)).test_client()
    name = svc.name

    def check(resp, what):
        assert resp.status_code < 500 and resp.mimetype == "application/json", (what, resp.status_code, resp.get_data()[:300])

    @ROUND
    @given(body=S.v2_request())
    def v2(body):
        check(client.post(f"/v2/models/{name}/infer", data=S.encode_json(body), content_type="application/json"), body)

    @ROUND
    @given(req=S.binary_extension())
    def v2_binary(req):
        check(client.post(f"/v2/models/{name}/infer", data=req[0], headers=req[1]), req)

    @ROUND
    @given(body=S.tfserving_request())
    def tfs(body):
        check(client.post(f"/v1/models/{name}:predict", data=S.encode_json(body), content_type="application/json"), body)

    @ROUND
    @given(data=S.image_bytes)
    def predict(data):
        check(client.post("/predict", data=data, content_type="application/octet-stream"), data)

    return [v2, v2_binary, tfs, predict]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--http", metavar="BUNDLE", help="also fuzz the HTTP parsers against this bundle (Flask test client)")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")  # Pillow warns about every corrupt EXIF block it skips
    rounds = http_rounds(args.http) if args.http else []
    deadline = time.monotonic() + args.seconds
    total, i = 0, 0
    while time.monotonic() < deadline:
        total += decoder_round()
        if rounds:
            rounds[i % len(rounds)]()
            i += 1
        print(f"{total} decoder inputs, {i} parser rounds, no violation", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
