"""The server's Prometheus metrics, kept by prometheus_client in a private registry.

A private `CollectorRegistry` per app (not the library's global one): two apps
in one process (tests, a reload) never share or collide. Setting
PROMETHEUS_MULTIPROC_DIR before the process starts switches prometheus_client
to its multiprocess value files, and a scrape then reads every worker's files
through a MultiProcessCollector; each gauge says how workers' values combine.

The text is rendered from the registry's samples in the order each metric
declares its labels (`le` last) and without the `_created` series:
generate_latest sorts labels alphabetically and adds a `_created` gauge per
series, which would change every series key that dashboards and scripts match.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Seconds. Decoding a small JPEG takes ~1 ms, a Pi's inference tens of ms, a slow request seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("decode", "preprocess", "inference")


class BudgetCollector(Collector):
    """The memory budget's figures, read at scrape time: the budget counts under its own lock."""

    def __init__(self, budget):
        self.budget = budget

    def collect(self):
        memory = GaugeMetricFamily("edgeport_memory_budget_bytes",
                                   "The request memory budget: total, reserved by requests now, and the highest reservation seen.",
                                   labels=("kind",))
        for kind, v in (("total", self.budget.total), ("reserved", self.budget.used), ("peak", self.budget.peak)):
            memory.add_metric((kind,), v)
        refused = CounterMetricFamily("edgeport_memory_refusals_total",
                                      "Requests refused for memory: 413 (could never fit the budget), 503 (no room in time).",
                                      labels=("status",))
        for status, n in sorted(dict(self.budget.refused).items()):
            refused.add_metric((status,), n)
        return [memory, refused]


def _escape(value: str) -> str:
    return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render_text(registry: CollectorRegistry) -> str:
    """Text exposition format 0.0.4 of everything `registry` collects."""
    lines = []
    for family in registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        lines += [f"# HELP {name} {family.documentation}", f"# TYPE {name} {family.type}"]
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
            lines.append(f"{s.name}{{{labels}}} {floatToGoString(s.value)}" if labels else f"{s.name} {floatToGoString(s.value)}")
    return "\n".join(lines) + "\n"


class ServerMetrics:
    """The server's metrics. One instance per app; survives model reloads."""

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self, budget=None):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("edgeport_http_requests_total", "HTTP requests by endpoint, method and status code.",
                                ("endpoint", "method", "status"), registry=r)
        self.latency = Histogram("edgeport_http_request_duration_seconds", "Whole-request latency by endpoint.", ("endpoint",),
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.stages = Histogram("edgeport_stage_duration_seconds",
                                "Time per request spent in each stage: decode (image bytes to pixels), preprocess "
                                "(rotate, convert, resize) and inference (waiting for and running a model instance).",
                                ("stage",), buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("edgeport_http_requests_in_flight", "Requests being handled now.",
                               multiprocess_mode="livesum", registry=r)
        self.model_info = Gauge("edgeport_model_info", "The model being served (value is always 1).",
                                ("name", "version", "format", "precision", "backend", "sha256"),
                                multiprocess_mode="liveall", registry=r)
        self.pool = Gauge("edgeport_model_instances",
                          "Model instances in the pool, threads per instance, and threads of the solo instance (0: none).", ("kind",),
                          multiprocess_mode="liveall", registry=r)
        self.loaded = Gauge("edgeport_model_loaded_timestamp_seconds", "When the serving model finished loading (Unix time).",
                            multiprocess_mode="livemax", registry=r)
        self.reloads = Counter("edgeport_model_reloads_total", "Model reloads by result.", ("result",), registry=r)
        # Children bound once: prometheus_client's labels() validates, stringifies and locks on every call,
        # 5-17 us each on a 2-core EPYC, five times a request. (endpoint, method, status) -> (count, latency).
        self._request_children: dict[tuple, tuple] = {}
        self._stage_children: dict[str, object] = {}  # bound at first use: a stage's series appears once observed
        self.budget_collector = BudgetCollector(budget) if budget is not None else None
        if self.budget_collector is not None:
            r.register(self.budget_collector)

    def set_model(self, svc) -> None:
        m = svc.bundle.meta
        self.model_info.clear()
        self.model_info.labels(svc.name, svc.version, m.get("format"), m.get("precision"), svc.backend,
                               m.get("sha256", "")[:12]).set(1)
        for kind, value in (("instances", svc.pool_size), ("threads_per_instance", svc.threads), ("solo_threads", svc.solo_threads)):
            self.pool.labels(kind).set(value)
        self.loaded.set(svc.loaded_at)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float, timings_ms: dict) -> None:
        key = (endpoint, method, status)
        children = self._request_children.get(key)
        if children is None:  # a race here binds the same children twice: labels() returns the one it holds
            children = self._request_children[key] = (self.requests.labels(endpoint, method, str(status)),
                                                      self.latency.labels(endpoint))
        children[0].inc()
        children[1].observe(seconds)
        for stage in STAGES:
            if stage in timings_ms:
                child = self._stage_children.get(stage) or self._stage_children.setdefault(stage, self.stages.labels(stage))
                child.observe(timings_ms[stage] / 1e3)

    def render(self) -> str:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            scrape = CollectorRegistry()
            multiprocess.MultiProcessCollector(scrape)
            if self.budget_collector is not None:  # each process admits against its own budget
                scrape.register(self.budget_collector)
            return render_text(scrape)
        return render_text(self.registry)
