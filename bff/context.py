"""What the gateway knows about the request it is answering, wherever it is in the code.

:class:`RequestContext` is created by the edge middleware (:mod:`bff.middleware`) and reachable
through :func:`current` from any code that runs for the request, including the tasks it starts.
It carries the request and trace ids, and collects what the access log, ``Server-Timing`` and the
spans report: time spent in upstream and provider calls, retries, whether the micro-cache served
the answer.

:class:`CallObserver` watches each outgoing HTTP attempt: it adds the child ``traceparent``
(and ``tracestate``), times the attempt into the request's context and, with OpenTelemetry on,
wraps it in a client span. It serves both the backend client (``upstream_client``'s observer hook)
and the provider's client (:class:`ObservedTransport`).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import MutableMapping, Sequence
from contextvars import ContextVar
from functools import cache
from typing import Any, Literal, Protocol, TypedDict

import httpx

from .cache import CacheOutcome
from .tracecontext import Parent, new_span_id, new_trace_id, traceparent

Peer = Literal["upstream", "provider"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ServerSpan(Protocol):
    trace_id: str
    flags: str

    def end(self, scope: Any, status: int, route: str) -> None: ...


class ClientSpan(Protocol):
    span_id: str

    def end(self, status: int | None) -> None: ...


class Spans(Protocol):
    """Recorded spans (OpenTelemetry, :mod:`bff.otel`); without them ids are still propagated."""

    def server(self, scope: Any, parent: Parent | None) -> ServerSpan: ...

    def client(
        self, server: ServerSpan, method: str, url: httpx.URL, attempt: int, peer: Peer
    ) -> ClientSpan: ...


class RequestContext:
    __slots__ = (
        "_busy_since",
        "_outgoing",
        "cache",
        "flags",
        "provider_calls",
        "provider_seconds",
        "request_id",
        "retries",
        "span",
        "started",
        "trace_id",
        "tracestate",
        "upstream_calls",
        "upstream_seconds",
        "waited",
    )

    def __init__(
        self, request_id: str, parent: Parent | None, span: ServerSpan | None = None
    ) -> None:
        self.request_id = request_id
        self.started = time.perf_counter()
        self.span = span
        if span is not None:
            self.trace_id, self.flags = span.trace_id, span.flags
        elif parent is not None:
            self.trace_id, self.flags = parent.trace_id, parent.flags
        else:
            # Nothing records this trace here, so it is not marked sampled downstream.
            self.trace_id, self.flags = new_trace_id(), "00"
        self.tracestate = parent.tracestate if parent is not None else None
        self.upstream_seconds = 0.0
        self.upstream_calls = 0
        self.retries = 0
        self.provider_seconds = 0.0
        self.provider_calls = 0
        self.cache: CacheOutcome = "bypass"
        self.waited = 0.0
        """Wall time with at least one outgoing call in flight (concurrent calls count once)."""
        self._outgoing = 0
        self._busy_since = 0.0

    def call_started(self, now: float) -> None:
        if self._outgoing == 0:
            self._busy_since = now
        self._outgoing += 1

    def call_ended(self, now: float) -> None:
        self._outgoing -= 1
        if self._outgoing == 0:
            self.waited += now - self._busy_since


_current: ContextVar[RequestContext | None] = ContextVar("bff_request", default=None)


def current() -> RequestContext | None:
    """The context of the request being answered, or ``None`` outside a request."""
    return _current.get()


def enter(context: RequestContext) -> object:
    return _current.set(context)


def leave(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def note_cache(outcome: CacheOutcome) -> None:
    """The micro-cache says whether it answered this request (``hit``) or the upstream did."""
    context = _current.get()
    if context is not None:
        context.cache = outcome


class _Attempt:
    __slots__ = ("context", "peer", "span", "started")

    def __init__(
        self, context: RequestContext, peer: Peer, span: ClientSpan | None, started: float
    ) -> None:
        self.context = context
        self.peer = peer
        self.span = span
        self.started = started


class CallObserver:
    """Trace headers, timing and spans for the outgoing calls made while answering a request."""

    def __init__(self, peer: Peer, spans: Spans | None = None) -> None:
        self.peer: Peer = peer
        self.spans = spans

    def attempt_started(
        self, method: str, url: httpx.URL, headers: MutableMapping[str, str], attempt: int
    ) -> object:
        context = _current.get()
        if context is None:
            return None  # readiness probes and start-up work: no request to trace
        span = (
            self.spans.client(context.span, method, url, attempt, self.peer)
            if self.spans is not None and context.span is not None
            else None
        )
        span_id = span.span_id if span is not None else new_span_id()
        headers["traceparent"] = traceparent(context.trace_id, span_id, context.flags)
        if context.tracestate:
            headers["tracestate"] = context.tracestate
        if attempt > 1:
            context.retries += 1
        now = time.perf_counter()
        context.call_started(now)
        return _Attempt(context, self.peer, span, now)

    def attempt_ended(self, started: object, status: int | None) -> None:
        if not isinstance(started, _Attempt):
            return
        now = time.perf_counter()
        seconds = now - started.started
        context = started.context
        context.call_ended(now)
        if started.peer == "upstream":
            context.upstream_seconds += seconds
            context.upstream_calls += 1
        else:
            context.provider_seconds += seconds
            context.provider_calls += 1
        if started.span is not None:
            started.span.end(status)


class ObservedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that reports each request to a :class:`CallObserver`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, observer: CallObserver) -> None:
        self._inner = inner
        self._observer = observer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = self._observer.attempt_started(request.method, request.url, request.headers, 1)
        status: int | None = None
        try:
            response = await self._inner.handle_async_request(request)
            status = response.status_code
            return response
        finally:
            self._observer.attempt_ended(started, status)

    async def aclose(self) -> None:
        await self._inner.aclose()


class RequestFacts(TypedDict):
    """Who sent a request, as the audit trail names it."""

    request_id: str | None
    trace_id: str | None
    client_ip: str | None
    user_agent: str | None


def request_facts(scope: Any, trusted_proxies: Sequence[str]) -> RequestFacts:
    state = scope.get("state") or {}
    request: RequestContext | None = state.get("context")
    user_agent = None
    for name, value in scope["headers"]:
        if name == b"user-agent":
            user_agent = value.decode("latin-1")
            break
    return RequestFacts(
        request_id=state.get("request_id"),
        trace_id=request.trace_id if request is not None else None,
        client_ip=client_ip(scope, trusted_proxies),
        user_agent=user_agent,
    )


@cache
def _networks(proxies: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _address(text: str) -> IPAddress | None:
    """An IP address; an IPv4-mapped IPv6 one (a dual-stack socket's view) as the IPv4 one."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: IPAddress | None, networks: tuple[IPNetwork, ...]) -> bool:
    return ip is not None and any(ip in network for network in networks)


def client_ip(scope: Any, trusted_proxies: Sequence[str]) -> str | None:
    """The caller's address: the peer's, or, when the peer is a trusted proxy, the rightmost
    address in ``X-Forwarded-For`` that is not one (``None`` when that entry is not an address).
    """
    peer = scope.get("client")
    if not peer:
        return None
    peer_ip = _address(str(peer[0]))
    networks = _networks(tuple(trusted_proxies))
    if not networks or not _trusted(peer_ip, networks):
        return str(peer_ip or peer[0])
    hops = [
        _address(hop.strip())
        for name, value in scope["headers"]
        if name == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
    ]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return None if hop is None else str(hop)
    first = hops[0] if hops else peer_ip
    return None if first is None else str(first)
