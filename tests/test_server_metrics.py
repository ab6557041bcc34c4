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


def test_observe_request_counts_each_label_set_apart():
    """Children are bound once per label set: a second request of one set adds to it, another set gets its own."""
    from edge_server.metrics import ServerMetrics, render_text

    m = ServerMetrics()
    timings = {"decode": 1.0, "preprocess": 0.5, "inference": 2.0, "total": 3.5}
    for status in (200, 200, 400):
        m.observe_request("/predict", "POST", status, 0.004, timings)
    m.observe_request("/v2/health/ready", "GET", 200, 0.0001, {})
    series, _ = parse(render_text(m.registry))
    assert series['edgeport_http_requests_total{endpoint="/predict",method="POST",status="200"}'] == 2
    assert series['edgeport_http_requests_total{endpoint="/predict",method="POST",status="400"}'] == 1
    assert series['edgeport_http_requests_total{endpoint="/v2/health/ready",method="GET",status="200"}'] == 1
    assert series['edgeport_http_request_duration_seconds_count{endpoint="/predict"}'] == 3
    assert series['edgeport_stage_duration_seconds_count{stage="inference"}'] == 3
    assert series['edgeport_stage_duration_seconds_bucket{stage="decode",le="0.001"}'] == 3
