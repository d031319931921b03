"""OpenTelemetry spans over OTLP/HTTP, imported only when ``[tracing].otlp_endpoint`` is set.

One server span per request (its parent is the caller's ``traceparent``), and one client span per
upstream or provider attempt, a child of it, whose id is the parent id the callee receives. Span
attributes follow the HTTP semantic conventions (``http.request.method``, ``http.route``,
``http.response.status_code``, ``url.full``, ``server.address``, ``http.request.resend_count``…).

Needs the ``otel`` extra (``pip install 'flows-bff[otel]'``); without it, asking for spans is a
configuration error at start, never a failure per request.
"""

from __future__ import annotations

from typing import Any

import httpx

from .context import ClientSpan, Peer, ServerSpan
from .settings import ConfigError, TracingSection
from .tracecontext import Parent

try:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import (
        NonRecordingSpan,
        Span,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
        TraceState,
    )
except ImportError as exc:  # pragma: no cover - exercised by the wheel without the extra
    raise ConfigError(
        "[tracing].otlp_endpoint: needs the otel extra (pip install 'flows-bff[otel]')"
    ) from exc


class _Server:
    __slots__ = ("flags", "span", "trace_id")

    def __init__(self, span: Span) -> None:
        self.span = span
        context = span.get_span_context()
        self.trace_id = f"{context.trace_id:032x}"
        # Only the sampled bit goes downstream (as for an incoming traceparent, see
        # tracecontext.parse), not the SDK's "random trace id" bit of a trace it starts.
        self.flags = "01" if context.trace_flags.sampled else "00"

    def end(self, scope: Any, status: int, route: str) -> None:
        method = scope["method"]
        self.span.update_name(f"{method} {route}" if route != "unmatched" else method)
        if route != "unmatched":
            self.span.set_attribute("http.route", route)
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
            self.span.set_attribute("error.type", str(status))
        self.span.end()


class _Client:
    __slots__ = ("span", "span_id")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.span_id = f"{span.get_span_context().span_id:016x}"

    def end(self, status: int | None) -> None:
        if status is None:
            self.span.set_status(Status(StatusCode.ERROR))
            self.span.set_attribute("error.type", "no_response")
        else:
            self.span.set_attribute("http.response.status_code", status)
            if status >= 400:
                self.span.set_status(Status(StatusCode.ERROR))
                self.span.set_attribute("error.type", str(status))
        self.span.end()


class OtelSpans:
    """:class:`bff.context.Spans` recorded with the OpenTelemetry SDK."""

    def __init__(self, tracing: TracingSection) -> None:
        assert tracing.otlp_endpoint is not None
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": tracing.service_name})
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=tracing.otlp_endpoint))
        )
        self.tracer = self.provider.get_tracer("bff")

    def server(self, scope: Any, parent: Parent | None) -> ServerSpan:
        context = None
        if parent is not None:
            remote = SpanContext(
                trace_id=int(parent.trace_id, 16),
                span_id=int(parent.span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(int(parent.flags, 16)),
                trace_state=TraceState.from_header([parent.tracestate])
                if parent.tracestate
                else None,
            )
            context = trace.set_span_in_context(NonRecordingSpan(remote))
        attributes: dict[str, Any] = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
        }
        server, client = scope.get("server"), scope.get("client")
        if server:
            attributes["server.address"], attributes["server.port"] = server[0], server[1]
        if client:
            attributes["client.address"] = client[0]
        span = self.tracer.start_span(
            scope["method"], context=context, kind=SpanKind.SERVER, attributes=attributes
        )
        return _Server(span)

    def client(
        self, server: ServerSpan, method: str, url: httpx.URL, attempt: int, peer: Peer
    ) -> ClientSpan:
        assert isinstance(server, _Server)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.full": str(url.copy_with(query=None)),
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
            "peer.service": peer,
        }
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        span = self.tracer.start_span(
            method,
            context=trace.set_span_in_context(server.span),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        return _Client(span)

    def shutdown(self) -> None:
        """Export what is still buffered, then stop."""
        self.provider.shutdown()
