"""Prometheus metrics, one registry per application (no process-wide globals)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from primaa.jobs.model import JobStatus

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: Event-loop lag is normally well under a millisecond; the upper buckets tell a hiccup
#: from a loop blocked by a synchronous call.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: prometheus_client's default buckets (the last one +Inf), as when it counted requests.
REQUEST_BUCKETS: tuple[float, ...] = Histogram.DEFAULT_BUCKETS
#: Requests noted before they are counted without a scrape (memory stays bounded).
_MAX_NOTED = 4096
#: A bucket's ``le`` label as prometheus_client writes it (``0.5``, ``1.0``, ``+Inf``);
#: the library leaves the function untyped.
_LE_LABEL: Callable[[float], str] = floatToGoString


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Gauge(
            "primaa_jobs",
            "Stored jobs by algorithm and status.",
            ["algorithm", "status"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "primaa_queue_depth", "Jobs waiting for a worker (Pending).", registry=self.registry
        )
        self.jobs_finished = Counter(
            "primaa_jobs_finished",
            "Jobs that reached a final state in this process.",
            ["algorithm", "status"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "primaa_job_duration_seconds",
            "Time from start of a run to its final state.",
            ["algorithm", "status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "primaa_webhook_attempts",
            "Callback attempts by outcome (Delivered, Pending = will retry, Failed = gave up).",
            ["outcome"],
            registry=self.registry,
        )
        self.requests = RequestCounts()
        self.registry.register(self.requests)
        self.loop_lag = Histogram(
            "primaa_event_loop_lag_seconds",
            "How late the event loop woke a periodic sleep (time it was blocked).",
            buckets=LOOP_LAG_BUCKETS,
            registry=self.registry,
        )

    def job_finished(self, algorithm: str, status: str, seconds: float | None) -> None:
        self.jobs_finished.labels(algorithm, status).inc()
        if seconds is not None:
            self.job_duration.labels(algorithm, status).observe(seconds)

    def set_job_counts(self, counts: Mapping[tuple[str, JobStatus], int]) -> None:
        self.jobs.clear()
        pending = 0
        for (algorithm, status), count in counts.items():
            self.jobs.labels(algorithm=algorithm, status=str(status)).set(count)
            if status is JobStatus.PENDING:
                pending += count
        self.queue_depth.set(pending)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestCounts:
    """The HTTP request counter and duration histogram, kept in plain integers: requests are
    noted as they end and counted in runs, at the latest when scraped.

    Every request is observed, and prometheus_client's children take a lock per value:
    1.6 us a request, against 0.5 here with the counting, which runs over thousands of
    requests at a time and so stays in the CPU's caches. Only the event loop notes and
    scrapes.
    """

    def __init__(self, buckets: tuple[float, ...] = REQUEST_BUCKETS) -> None:
        self._bounds = buckets
        self._noted: list[tuple[str, str, int, float]] = []
        self._counts: dict[tuple[str, str, int], int] = {}
        #: Per (method, route): a count per bucket, and the sum.
        self._durations: dict[tuple[str, str], tuple[list[int], list[float]]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self._noted.append((method, route, status, seconds))
        if len(self._noted) >= _MAX_NOTED:
            self._count_noted()

    def _count_noted(self) -> None:
        noted, self._noted = self._noted, []
        for method, route, status, seconds in noted:
            key = (method, route, status)
            self._counts[key] = self._counts.get(key, 0) + 1
            durations = self._durations.get((method, route))
            if durations is None:
                empty = [0] * len(self._bounds)
                durations = self._durations[method, route] = (empty, [0.0])
            counts, total = durations
            # Prometheus buckets count values <= their bound: the first bound not below it.
            counts[bisect.bisect_left(self._bounds, seconds)] += 1
            total[0] += seconds

    def collect(self) -> Iterator[Metric]:
        self._count_noted()
        requests = CounterMetricFamily(
            "primaa_http_requests",
            "HTTP requests by route and status code.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in list(self._counts.items()):
            requests.add_metric([method, route, str(status)], count)
        yield requests
        durations = HistogramMetricFamily(
            "primaa_http_request_duration_seconds",
            "HTTP request handling time.",
            labels=["method", "route"],
        )
        for (method, route), (counts, total) in list(self._durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(self._bounds, list(counts), strict=True):
                cumulative += count
                buckets.append((_LE_LABEL(bound), cumulative))
            durations.add_metric([method, route], buckets, total[0])
        yield durations
