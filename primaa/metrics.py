"""Prometheus metrics, one registry per application (no process-wide globals)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from primaa.jobs.model import JobStatus

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: Event-loop lag is normally well under a millisecond; the upper buckets tell a hiccup
#: from a loop blocked by a synchronous call.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


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
        self.http_requests = Counter(
            "primaa_http_requests",
            "HTTP requests by route and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.http_duration = Histogram(
            "primaa_http_request_duration_seconds",
            "HTTP request handling time.",
            ["method", "route"],
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "primaa_event_loop_lag_seconds",
            "How late the event loop woke a periodic sleep (time it was blocked).",
            buckets=LOOP_LAG_BUCKETS,
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count and time one request; the labelled children are looked up once per route."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.http_requests.labels(method, route, str(status)),
                self.http_duration.labels(method, route),
            )
            self._request_children[key] = children
        counter, histogram = children
        counter.inc()
        histogram.observe(seconds)

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
