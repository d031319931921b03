"""Prometheus metrics for operators: request rate, errors and latency per route template."""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from upstream_client import BreakerState

logger = logging.getLogger("bff.metrics")


class SessionCounter(Protocol):
    async def count(self) -> int: ...


class Streams(Protocol):
    @property
    def open_streams(self) -> int: ...


class Breaker(Protocol):
    @property
    def state(self) -> BreakerState: ...

    @property
    def opened(self) -> int: ...


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Clients may send any token as a method; only these become label values, the rest "other".
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """One registry per app, so that several apps (tests, workers) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http = HttpMetrics()
        self.registry.register(self.http)

        self.audit_events = Counter(
            "bff_audit_events",
            "Audit events written, by event, outcome and reason (the problem slug, if any).",
            ["event", "outcome", "reason"],
            registry=self.registry,
        )
        self.audit_failures = Counter(
            "bff_audit_failures",
            "Audit events that could not be written, by event (a write among them was refused).",
            ["event"],
            registry=self.registry,
        )

        self.sign_ins = Counter(
            "bff_sign_ins",
            "Sign-ins by outcome (started, succeeded, failed) and reason (the problem slug).",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.token_refreshes = Counter(
            "bff_token_refreshes",
            "Access-token refreshes by outcome (succeeded, failed) and reason "
            "(rejected: the provider refused the refresh token; unavailable: no answer).",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.sign_outs = Counter(
            "bff_sign_outs",
            "Sessions ended, by kind: user (signed out), revoked (ended from the session list) "
            "or backchannel (the provider said so).",
            ["kind"],
            registry=self.registry,
        )
        self.rate_limit_fallbacks = Counter(
            "bff_rate_limit_fallbacks",
            "API calls rate-limited by this instance alone because Redis did not answer.",
            registry=self.registry,
        )
        self._services: list[ServiceGauges] = []

    def watch(self, gauges: ServiceGauges) -> Callable[[], None]:
        """Report ``gauges`` at every scrape, until the returned function is called."""
        self.registry.register(gauges)
        self._services.append(gauges)

        def stop() -> None:
            self.registry.unregister(gauges)
            self._services.remove(gauges)

        return stop

    def audit_observed(self, event: str, outcome: str, reason: str | None, written: bool) -> None:
        """:class:`bff.audit.AuditLog` reports every event it wrote or failed to write here."""
        if written:
            self.audit_events.labels(event, outcome, reason or "").inc()
        else:
            self.audit_failures.labels(event).inc()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request answered (:class:`bff.middleware.EdgeMiddleware` calls this)."""
        self.http.observe(route, method if method in _KNOWN_METHODS else "other", status, seconds)

    async def endpoint(self, request: Request) -> Response:
        for gauges in self._services:
            await gauges.refresh()
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    return f"{scope.get('root_path', '')}{path}" if path.startswith("/") else path


class HttpMetrics(Collector):
    """Requests answered, their latency and those in flight: counted per request with plain
    integers on the event loop's thread, and turned into Prometheus families only at a scrape
    (``prometheus_client``'s metric objects take a lock on every update, a cost paid on each
    request of the hot path)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._answered: dict[tuple[str, str, int], int] = {}
        # (route, method) -> [count per bucket, the last one for +Inf], and the sum of seconds.
        self._latency: dict[tuple[str, str], tuple[list[int], list[float]]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self._answered[key] = self._answered.get(key, 0) + 1
        latency = self._latency.get((route, method))
        if latency is None:
            latency = self._latency[route, method] = ([0] * (len(_LATENCY_BUCKETS) + 1), [0.0])
        latency[0][bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        latency[1][0] += seconds

    def collect(self) -> Iterator[Metric]:
        answered = CounterMetricFamily(
            "bff_http_requests",
            "HTTP requests answered, by route template, method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in list(self._answered.items()):
            answered.add_metric([route, method, str(status)], count)
        yield answered
        latency = HistogramMetricFamily(
            "bff_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            labels=["route", "method"],
        )
        bounds = [*(repr(bound) for bound in _LATENCY_BUCKETS), "+Inf"]
        for (route, method), (counts, total) in list(self._latency.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, counts, strict=True):
                running += count
                cumulative.append((bound, running))
            latency.add_metric([route, method], cumulative, total[0])
        yield latency
        yield GaugeMetricFamily(
            "bff_http_requests_in_flight", "Requests being answered.", value=self.in_flight
        )


class ServiceGauges(Collector):
    """What the app's services are like at the scrape: live sessions in the store (counted by
    :meth:`refresh`, which the scrape awaits first), this instance's open session event streams,
    and the upstream circuit breaker."""

    def __init__(self, *, sessions: SessionCounter, breaker: Breaker, streams: Streams) -> None:
        self._sessions = sessions
        self._breaker = breaker
        self._streams = streams
        self._active = 0

    async def refresh(self) -> None:
        try:
            async with asyncio.timeout(1.0):
                self._active = await self._sessions.count()
        except Exception as exc:  # a slow or absent store must not fail the scrape
            logger.warning("cannot count sessions for metrics: %s", type(exc).__name__)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "bff_sessions_active",
            "Live sessions in the session store, counted when metrics are scraped.",
            value=self._active,
        )
        yield GaugeMetricFamily(
            "bff_session_streams_open",
            "Session event streams open on this instance (GET /auth/session/events), against "
            "[session_events].max_streams.",
            value=self._streams.open_streams,
        )
        breaker = self._breaker
        state = GaugeMetricFamily(
            "bff_upstream_circuit_state",
            "The upstream circuit breaker: 1 for its current state (closed, open, half_open).",
            labels=["state"],
        )
        for name in BreakerState:
            state.add_metric([name.value], 1 if breaker.state is name else 0)
        yield state
        yield CounterMetricFamily(
            "bff_upstream_circuit_opens",
            "Times the upstream circuit opened (calls then fail fast with 503).",
            value=breaker.opened,
        )
