"""Request metrics, counted in plain integers, scrape as prometheus_client's own did."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from primaa.metrics import REQUEST_BUCKETS, Metrics

ROUTE = "/status/{job_id}"


def _samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.render().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_requests_are_counted_by_method_route_and_status() -> None:
    metrics = Metrics()
    for status in (200, 200, 404):
        metrics.requests.observe("GET", ROUTE, status, 0.001)
    metrics.requests.observe("POST", "/jobs", 202, 0.02)
    samples = _samples(metrics)
    counted = {
        tuple(sorted(labels)): value
        for (name, labels), value in samples.items()
        if name == "primaa_http_requests_total"
    }
    assert counted == {
        (("method", "GET"), ("route", ROUTE), ("status", "200")): 2,
        (("method", "GET"), ("route", ROUTE), ("status", "404")): 1,
        (("method", "POST"), ("route", "/jobs"), ("status", "202")): 1,
    }


@pytest.mark.parametrize(
    ("seconds", "first_bucket"),
    [(0.0001, 0.005), (0.005, 0.005), (0.0050001, 0.01), (9.0, 10.0), (11.0, float("inf"))],
)
def test_a_duration_falls_in_every_bucket_from_the_first_bound_not_below_it(
    seconds: float, first_bucket: float
) -> None:
    metrics = Metrics()
    metrics.requests.observe("GET", ROUTE, 200, seconds)
    metrics.requests.observe("GET", ROUTE, 404, 0.001)
    samples = _samples(metrics)
    labels = {("method", "GET"), ("route", ROUTE)}
    for bound in REQUEST_BUCKETS:
        le = "+Inf" if bound == float("inf") else str(float(bound))
        bucket = frozenset({*labels, ("le", le)})
        counted = samples["primaa_http_request_duration_seconds_bucket", bucket]
        assert counted == (bound >= 0.001) + (bound >= first_bucket), le
    assert samples["primaa_http_request_duration_seconds_count", frozenset(labels)] == 2
    assert samples["primaa_http_request_duration_seconds_sum", frozenset(labels)] == pytest.approx(
        seconds + 0.001
    )


def test_requests_past_the_noting_bound_are_all_counted_and_memory_stays_bounded() -> None:
    metrics = Metrics()
    for _ in range(10_000):
        metrics.requests.observe("GET", ROUTE, 200, 0.001)
    assert len(metrics.requests._noted) < 4096
    labels = frozenset({("method", "GET"), ("route", ROUTE), ("status", "200")})
    assert _samples(metrics)["primaa_http_requests_total", labels] == 10_000
    metrics.requests.observe("GET", ROUTE, 200, 0.001)
    assert _samples(metrics)["primaa_http_requests_total", labels] == 10_001
