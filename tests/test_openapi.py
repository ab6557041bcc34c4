"""The OpenAPI document (edge_server/openapi.py) covers every route, and the live server keeps to it.

The schemathesis run is bounded (a few dozen examples per operation, ~30 s
in all): every generated request, valid or not, must get a status the
document lists, with the content type and body schema it gives, and never
a 5xx. Longer: EDGEPORT_FUZZ_EXAMPLES=500 pytest tests/test_openapi.py.
"""

from __future__ import annotations

import os
import re

import pytest

from conftest import http

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi import checks as oas_checks  # noqa: E402

EXAMPLES = int(os.environ.get("EDGEPORT_FUZZ_EXAMPLES", "20"))
CHECKS = [
    schemathesis.checks.not_a_server_error,
    oas_checks.status_code_conformance,
    oas_checks.content_type_conformance,
    oas_checks.response_schema_conformance,
]


def _flask_paths(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for m in rule.methods - {"HEAD", "OPTIONS"}:
            out.add((path, m.lower()))
    return out


def test_document_lists_every_route_and_nothing_else(int8_bundle):
    from edge_server.app import create_app
    from edge_server.openapi import openapi_document
    from edge_core.service import ModelService, ServiceOptions
    from edge_server.settings import ServerSettings

    svc = ModelService.from_path(int8_bundle, options=ServiceOptions(pool_size=1, warmup_runs=0))
    app = create_app(svc, ServerSettings(bundle=int8_bundle, access_log=False))
    doc = openapi_document(svc)
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert documented == _flask_paths(app)
    # every operation documents its errors as the JSON error object, and a 200 (or 204)
    for path, ops in doc["paths"].items():
        for method, o in ops.items():
            assert {"200", "204"} & set(o["responses"]), (path, method)
            for code, r in o["responses"].items():
                if code.startswith("4") and "content" in r and path not in ("/v2/health/ready",) and not path.endswith("/ready"):
                    assert r["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (path, code)


def test_served_document_has_the_live_model(server):
    status, doc, headers = http("GET", server.url + "/openapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert doc["openapi"].startswith("3.")
    name = doc["paths"]["/v2/models/{name}/infer"]["post"]["parameters"][0]["schema"]["enum"]
    assert name == ["shapes"]
    assert doc["components"]["schemas"]["Prediction"]["properties"]["label"]["enum"] == ["circle", "square", "triangle"]
    for path in ("/predict", "/v1/models/{name}:predict", "/v2/models/{name}/infer", "/admin/reload", "/metrics", "/"):
        assert path in doc["paths"], path


def run_schemathesis(url: str, examples: int = EXAMPLES, modes=("positive", "negative")) -> tuple[list[str], int]:
    """Every operation, in each generation mode, `examples` cases: the failures (one line each) and the number of calls.

    Driven through schemathesis's Python API (operation.as_strategy + hypothesis) rather than its
    pytest plugin, which does not load under pytest 9.
    """
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation.modes import GenerationMode

    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in modes:
            @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def one(case):
                nonlocal calls
                calls += 1
                case.call_and_validate(checks=CHECKS, timeout=30)

            try:
                one()
            except Unsatisfiable:  # nothing to negate: an operation without parameters or body
                pass
            except (Exception, BaseExceptionGroup) as e:  # a check failed: keep going, report all at the end
                failures.append(f"{operation.label} [{mode}]: {str(e)[:1500]}")
    return failures, calls


def test_live_server_keeps_to_its_document(server):
    failures, calls = run_schemathesis(server.url)
    assert calls > 200
    assert not failures, "\n\n".join(failures)


def test_method_not_allowed_says_which_are(server):
    """schemathesis's unsupported_method check: a 405 carries an Allow header (RFC 9110), and the JSON error."""
    status, body, headers = http("DELETE", server.url + "/predict")
    assert status == 405 and "POST" in headers["Allow"] and "Received: DELETE" in body["error"]


if __name__ == "__main__":  # against a running server: python tests/test_openapi.py http://127.0.0.1:8080 [examples]
    import sys

    f, n = run_schemathesis(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else EXAMPLES)
    print("\n\n".join(f) or "no failures", f"\n{n} calls", sep="")

