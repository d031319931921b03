"""The request metrics, counted without prometheus_client's per-update locks, expose exactly what
its own Counter, Histogram and Gauge would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bff.observability import _LATENCY_BUCKETS, Metrics

ROUTE = "/api/bff/v1/tenants/{tid}/clusters/{cid}/delivery-flows"
OBSERVED = [
    (ROUTE, "GET", 200, 0.004),
    (ROUTE, "GET", 200, 0.005),  # on a bucket's bound: counted in it (le is "less or equal")
    (ROUTE, "GET", 200, 0.0051),
    (ROUTE, "GET", 404, 0.3),
    (ROUTE, "POST", 201, 12.0),  # beyond the last bound: +Inf only
    ("unmatched", "other", 405, 0.0),
]


def _samples(registry: CollectorRegistry) -> set[str]:
    lines = generate_latest(registry).decode().splitlines()
    # Only the reference metrics have _created samples; everything else must match.
    return {line for line in lines if line and "_created" not in line}


def test_the_request_metrics_are_what_prometheus_client_would_expose() -> None:
    metrics = Metrics()
    reference = CollectorRegistry()
    requests = Counter(
        "bff_http_requests",
        "HTTP requests answered, by route template, method and status.",
        ["route", "method", "status"],
        registry=reference,
    )
    latency = Histogram(
        "bff_http_request_duration_seconds",
        "Time to answer an HTTP request, by route template and method.",
        ["route", "method"],
        buckets=_LATENCY_BUCKETS,
        registry=reference,
    )
    in_flight = Gauge("bff_http_requests_in_flight", "Requests being answered.", registry=reference)
    for route, method, status, seconds in OBSERVED:
        metrics.observe(route, method, status, seconds)
        requests.labels(route, method, str(status)).inc()
        latency.labels(route, method).observe(seconds)
    metrics.http.in_flight += 3
    in_flight.inc(3)
    metrics.http.in_flight -= 1
    in_flight.dec()

    ours = {line for line in _samples(metrics.registry) if "bff_http_" in line}
    assert ours == _samples(reference)
    assert (
        f'bff_http_request_duration_seconds_bucket{{le="0.005",method="GET",route="{ROUTE}"}} 2.0'
        in ours
    )
