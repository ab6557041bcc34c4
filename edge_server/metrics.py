"""Prometheus metrics in the text exposition format (0.0.4), without a dependency.

A handful of counters, gauges and histograms is all the server needs; the
prometheus_client package would add a dependency and its own registry globals
to every device install. Every update takes one lock: a few hundred
nanoseconds, against milliseconds of decoding and inference.
"""

from __future__ import annotations

import bisect
import threading

# Seconds. Decoding a small JPEG takes ~1 ms, a Pi's inference tens of ms, a slow request seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    esc = (str(v).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, esc)) + "}"


def _num(v: float) -> str:
    v = float(v)
    if v == float("inf"):
        return "+Inf"
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help, labels
        self._lock = threading.Lock()
        self._values: dict[tuple, object] = {}

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def inc(self, *labels, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def set(self, *labels, value: float) -> None:
        with self._lock:
            self._values[labels] = float(value)

    def dec(self, *labels) -> None:
        self.inc(*labels, amount=-1.0)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


class CounterSnapshot(Gauge):
    """A counter kept elsewhere (e.g. by the memory budget), copied in at scrape time."""

    kind = "counter"


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = (), buckets=LATENCY_BUCKETS):
        super().__init__(name, help, labels)
        self.buckets = tuple(buckets)

    def observe(self, *labels, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)  # le is inclusive: value == bound lands in that bucket
        with self._lock:
            counts, total = self._values.get(labels, ([0] * (len(self.buckets) + 1), 0.0))
            counts[i] += 1
            self._values[labels] = (counts, total + value)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, (list(c), s)) for k, (c, s) in self._values.items())
        out = self.header()
        names = (*self.label_names, "le")
        for key, (counts, total) in items:
            cumulative = 0
            for bound, n in zip((*self.buckets, float("inf")), counts):
                cumulative += n
                out.append(f"{self.name}_bucket{_labels(names, (*key, _num(bound)))} {cumulative}")
            base = _labels(self.label_names, key)
            out.append(f"{self.name}_sum{base} {_num(total)}")
            out.append(f"{self.name}_count{base} {cumulative}")
        return out


class ServerMetrics:
    """The server's metrics. One instance per app; survives model reloads."""

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self, budget=None):
        self.budget = budget
        self.requests = Counter("edgeport_http_requests_total", "HTTP requests by endpoint, method and status code.",
                                ("endpoint", "method", "status"))
        self.latency = Histogram("edgeport_http_request_duration_seconds", "Whole-request latency by endpoint.", ("endpoint",))
        self.stages = Histogram("edgeport_stage_duration_seconds",
                                "Time per request spent in each stage: decode (image bytes to pixels), preprocess "
                                "(rotate, convert, resize) and inference (waiting for and running a model instance).",
                                ("stage",))
        self.in_flight = Gauge("edgeport_http_requests_in_flight", "Requests being handled now.")
        self.model_info = Gauge("edgeport_model_info", "The model being served (value is always 1).",
                                ("name", "version", "format", "precision", "backend", "sha256"))
        self.pool = Gauge("edgeport_model_instances",
                          "Model instances in the pool, threads per instance, and threads of the solo instance (0: none).", ("kind",))
        self.loaded = Gauge("edgeport_model_loaded_timestamp_seconds", "When the serving model finished loading (Unix time).")
        self.reloads = Counter("edgeport_model_reloads_total", "Model reloads by result.", ("result",))
        self.memory = Gauge("edgeport_memory_budget_bytes",
                            "The request memory budget: total, reserved by requests now, and the highest reservation seen.", ("kind",))
        self.refused = CounterSnapshot("edgeport_memory_refusals_total",
                             "Requests refused for memory: 413 (could never fit the budget), 503 (no room in time).", ("status",))
        self.in_flight.set(value=0)
        self.all = [self.requests, self.latency, self.stages, self.in_flight, self.model_info, self.pool, self.loaded, self.reloads,
                    self.memory, self.refused]

    def set_model(self, svc) -> None:
        m = svc.bundle.meta
        self.model_info.clear()
        self.model_info.set(svc.name, svc.version, m.get("format"), m.get("precision"), svc.backend, m.get("sha256", "")[:12], value=1)
        self.pool.set("instances", value=svc.pool_size)
        self.pool.set("threads_per_instance", value=svc.threads)
        self.pool.set("solo_threads", value=svc.solo_threads)
        self.loaded.set(value=svc.loaded_at)

    def observe_stages(self, timings_ms: dict) -> None:
        for stage in ("decode", "preprocess", "inference"):
            if stage in timings_ms:
                self.stages.observe(stage, value=timings_ms[stage] / 1e3)

    def render(self) -> str:
        if self.budget is not None:  # read at scrape time: the budget counts under its own lock
            for kind, v in (("total", self.budget.total), ("reserved", self.budget.used), ("peak", self.budget.peak)):
                self.memory.set(kind, value=v)
            for status, n in dict(self.budget.refused).items():
                self.refused.set(status, value=n)
        lines = []
        for m in self.all:
            lines += m.render()
        return "\n".join(lines) + "\n"
