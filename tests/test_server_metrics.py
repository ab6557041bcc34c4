"""`/metrics` is valid Prometheus text with the series the dashboards need; `/` and `/model` serve the page."""

import re

from conftest import http
from server_helpers import first_image

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (\S+)$')


def parse(text: str) -> dict:
    series = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line.startswith("#") or not line:
            continue
        else:
            m = SAMPLE.match(line)
            assert m, f"not a valid sample line: {line!r}"
            float(m.group(4).replace("+Inf", "inf"))
            series[line.rsplit(" ", 1)[0]] = float(m.group(4).replace("+Inf", "inf"))
    return series, types


def test_metrics_after_requests(server, heldout_dir):
    data = first_image(heldout_dir).read_bytes()
    for _ in range(3):
        http("POST", server.url + "/predict", data, {"Content-Type": "image/jpeg"})
    http("POST", server.url + "/predict", b"", {"Content-Type": "image/jpeg"})
    status, text, headers = http("GET", server.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    series, types = parse(text)
    assert types == {
        "edgeport_http_requests_total": "counter", "edgeport_http_request_duration_seconds": "histogram",
        "edgeport_stage_duration_seconds": "histogram", "edgeport_http_requests_in_flight": "gauge",
        "edgeport_model_info": "gauge", "edgeport_model_instances": "gauge",
        "edgeport_model_loaded_timestamp_seconds": "gauge", "edgeport_model_reloads_total": "counter",
        "edgeport_memory_budget_bytes": "gauge", "edgeport_memory_refusals_total": "counter",
    }
    assert series['edgeport_http_requests_total{endpoint="/predict",method="POST",status="200"}'] >= 3
    assert series['edgeport_http_requests_total{endpoint="/predict",method="POST",status="400"}'] >= 1
    for stage in ("decode", "preprocess", "inference"):
        n = series[f'edgeport_stage_duration_seconds_count{{stage="{stage}"}}']
        assert n >= 3 and series[f'edgeport_stage_duration_seconds_bucket{{stage="{stage}",le="+Inf"}}'] == n
    # The in-flight gauge counts this very request.
    assert series["edgeport_http_requests_in_flight"] == 1
    info = [k for k in series if k.startswith("edgeport_model_info{")]
    assert len(info) == 1 and 'name="shapes"' in info[0] and 'precision="int8"' in info[0]
    # Histogram buckets are cumulative.
    buckets = [v for k, v in series.items() if k.startswith('edgeport_http_request_duration_seconds_bucket{endpoint="/predict"')]
    assert buckets == sorted(buckets)


def test_page_and_model_details(server):
    status, html, headers = http("GET", server.url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "<script" in html and "http://" not in html and "https://" not in html  # self-contained: no CDN
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    status, body, _ = http("GET", server.url + "/model")
    assert status == 200 and body["name"] == "shapes" and body["labels"] == ["circle", "square", "triangle"]
    assert body["pool_size"] >= 1 and body["threads_per_instance"] >= 1
