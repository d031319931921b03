"""The edge: one pure ASGI middleware wrapped around every request.

:class:`EdgeMiddleware`, in order of what it does for a request:

- gives it its id (``X-Request-ID``: the caller's when sane, else ``req_…``) and its trace
  (the caller's W3C ``traceparent`` when valid, else a new one; :mod:`bff.tracecontext`), in a
  :class:`bff.context.RequestContext` that the rest of the code reaches with
  :func:`bff.context.current`; with OpenTelemetry on, a server span (:mod:`bff.otel`);
- refuses, before any routing happens, more header fields or bytes than a browser sends (431,
  ``Connection: close``) and raw paths a URL layer could reinterpret (404);
- on the way out drops ``Server``, ``X-Powered-By`` and ``Set-Cookie2``, and adds the security
  headers, the request id and, on API responses,
  ``Server-Timing`` (``app``, ``upstream``, ``idp`` durations and ``cache;desc=hit|miss|bypass``)
  and the write's ``Idempotency-Key``;
- when the app fails: a request cancelled by the server's shutdown before its answer started gets
  a 503 with ``Retry-After``; a caller that hung up before its body arrived is counted as 499,
  unanswered; anything else unhandled is logged and, if no answer started, becomes a 500 problem
  without internals;
- at the end counts the request in the metrics and writes its access line (:mod:`bff.logs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import re
import time
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import context, logs, tracecontext
from .context import RequestContext, Spans
from .observability import Metrics, route_template
from .paths import API_PREFIX, ID_PATTERN
from .problems import ProblemError, not_found

_TENANT_PREFIX = API_PREFIX + "/tenants/"
# The backend keeps ids of this shape too, so one id follows a call through both logs.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{7,127}")
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "cache-control": "no-store",
}

logger = logging.getLogger("bff.requests")


_ids = random.Random()


def new_request_id() -> str:
    # An identifier to quote, not a secret: nothing is keyed on it, so no system call for it.
    return f"req_{_ids.getrandbits(96):024x}"


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state")
    return state.get("request_id") if state else None


def trace_id_of(scope: Scope) -> str | None:
    state = scope.get("state")
    request = state.get("context") if state else None
    return request.trace_id if request is not None else None


@functools.lru_cache(maxsize=4096)
def is_plain_api_path(raw_path: bytes) -> bool:
    """No percent-encoding, dot segments, empty segments, trailing slash or odd characters; ids
    well-formed. Remembered per path: a dashboard asks for the same few paths again and again."""
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        return False
    # A trailing slash would otherwise earn a redirect to the path without it.
    if not _PLAIN_PATH.fullmatch(path) or "//" in path or path.endswith("/"):
        return False
    segments = path.split("/")
    if any(segment in {".", ".."} for segment in segments):
        return False
    if path.startswith(_TENANT_PREFIX):
        return all(ID_PATTERN.fullmatch(s) for s in path[len(API_PREFIX) + 1 :].split("/"))
    return True


HSTS = "max-age=31536000; includeSubDomains"
MAX_HEADER_FIELDS = 100
MAX_HEADER_BYTES = 32 * 1024
"""A browser sends a few dozen fields and a few KiB; more is refused with 431 before routing."""
_HEADERS_TOO_LARGE = ProblemError(
    431,
    "headers-too-large",
    f"Send at most {MAX_HEADER_FIELDS} header fields and {MAX_HEADER_BYTES // 1024} KiB of them.",
    headers={"Connection": "close"},
)
_SHUTTING_DOWN = ProblemError(
    503,
    "service-unavailable",
    "The service is restarting; try again shortly.",
    headers={"Retry-After": "1", "Connection": "close"},
)
_REMOVED = frozenset({b"server", b"set-cookie2", b"x-powered-by"})


class EdgeMiddleware:
    """Around every HTTP request: its id and trace; before routing, 431 for oversized headers and
    404 for a raw API path that is not plain; the answer's headers on the way out; 503 for a
    request cancelled at shutdown before its answer started, 499 for a caller gone before its
    body arrived, a logged last-resort 500 for anything else unhandled; then its metrics and its
    access line.

    ``hsts``: the app is served over https, so browsers may be told to never use http.
    ``spans``: record OpenTelemetry spans (``None``: ids are propagated, nothing recorded)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        hsts: bool = False,
        spans: Spans | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.spans = spans
        self.headers = [
            (name.encode(), value.encode())
            for name, value in {
                **SECURITY_HEADERS,
                **({"strict-transport-security": HSTS} if hsts else {}),
            }.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, parent, oversized = _read_headers(scope["headers"])
        span = self.spans.server(scope, parent) if self.spans is not None else None
        request = RequestContext(request_id, parent, span)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["context"] = request
        is_api = scope["path"].startswith(API_PREFIX)
        answer = _Answer(send, request, state, is_api, self.headers)
        token = context.enter(request)
        self.metrics.http.in_flight += 1
        try:
            refusal = _refusal(scope, oversized, is_api)
            if refusal is not None:
                await refusal.response(request_id, request.trace_id)(scope, receive, answer.send)
                return
            try:
                await self.app(scope, receive, answer.send)
            except (asyncio.CancelledError, Exception) as exc:
                await _recover(exc, scope, receive, answer)
        finally:
            self.metrics.http.in_flight -= 1
            self._finish(scope, request, answer.status)
            context.leave(token)

    def _finish(self, scope: Scope, request: RequestContext, status: int) -> None:
        seconds = time.perf_counter() - request.started
        route = route_template(scope)
        self.metrics.observe(route, scope["method"], status, seconds)
        if request.span is not None:
            request.span.end(scope, status, route)
        if not logs.access_enabled():
            return
        params: dict[str, Any] = scope.get("path_params") or {}
        principal = scope["state"].get("principal")
        logs.access(
            {
                "request_id": request.request_id,
                "trace_id": request.trace_id,
                "method": scope["method"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "upstream_ms": round(request.upstream_seconds * 1000, 2),
                "upstream_calls": request.upstream_calls,
                "retries": request.retries,
                "provider_ms": round(request.provider_seconds * 1000, 2),
                "cache": request.cache,
                "tenant_id": params.get("tid"),
                "cluster_id": params.get("cid"),
                "sub": principal.subject if principal is not None else None,
            }
        )


def _read_headers(
    headers: list[tuple[bytes, bytes]],
) -> tuple[str, tracecontext.Parent | None, bool]:
    """One pass over the request's header fields: its id, its trace parent, and whether there
    are more fields or bytes than :data:`MAX_HEADER_FIELDS` and :data:`MAX_HEADER_BYTES` allow."""
    offered = traceparent = tracestate = None
    size = 0
    for name, value in headers:
        size += len(name) + len(value)
        if name == b"x-request-id":
            offered = value.decode("latin-1")
        elif name == b"traceparent":
            # Two traceparent fields make the trace context invalid (W3C Trace Context).
            traceparent = "" if traceparent is not None else value.decode("latin-1")
        elif name == b"tracestate":
            # Several tracestate fields are one list (RFC 9110 field combination).
            state = value.decode("latin-1")
            tracestate = state if tracestate is None else f"{tracestate},{state}"
    request_id = offered if offered and _SANE_REQUEST_ID.fullmatch(offered) else new_request_id()
    oversized = len(headers) > MAX_HEADER_FIELDS or size > MAX_HEADER_BYTES
    return request_id, tracecontext.parse(traceparent, tracestate), oversized


def _refusal(scope: Scope, oversized: bool, is_api: bool) -> ProblemError | None:
    """What a request is refused with before it reaches the app, if anything: 431 for too many
    or too large header fields, 404 for an API path that is not plain."""
    if oversized:
        return _HEADERS_TOO_LARGE
    if is_api and not is_plain_api_path(scope.get("raw_path") or scope["path"].encode()):
        return not_found()
    return None


class _Answer:
    """One request's way out: :meth:`send` is the app's ``send``, which rewrites the headers of
    the answer's start and remembers its status (500 until one is sent)."""

    __slots__ = (
        "edge_headers",
        "is_api",
        "request",
        "send_downstream",
        "started",
        "state",
        "status",
    )

    def __init__(
        self,
        send: Send,
        request: RequestContext,
        state: dict[str, Any],
        is_api: bool,
        edge_headers: list[tuple[bytes, bytes]],
    ) -> None:
        self.send_downstream = send
        self.request = request
        self.state = state
        self.is_api = is_api
        self.edge_headers = edge_headers
        self.status = 500
        self.started = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            # One pass over the raw headers (ASGI names are lower-case bytes).
            raw = [item for item in message.get("headers", ()) if item[0] not in _REMOVED]
            message["headers"] = raw
            present = {name for name, _ in raw}
            raw.append((b"x-request-id", self.request.request_id.encode()))
            raw.extend(item for item in self.edge_headers if item[0] not in present)
            if self.is_api:
                raw.append((b"server-timing", _server_timing(self.request).encode()))
                if (key := self.state.get("idempotency_key")) is not None:
                    # A write's key, whatever became of it: the caller retries with it.
                    raw.append((b"idempotency-key", key.encode()))
        await self.send_downstream(message)


async def _recover(
    exc: asyncio.CancelledError | Exception, scope: Scope, receive: Receive, answer: _Answer
) -> None:
    """What the edge does when the app fails: answer if nothing was said yet, and record the
    status the request ends with."""
    request = answer.request
    if isinstance(exc, asyncio.CancelledError):
        # The server gave up on the request: its shutdown grace ran out. If nothing was said
        # yet, say so; the request then ends here, answered, not as an error.
        if answer.started:
            raise exc
        answer.status = 503
        with contextlib.suppress(Exception):
            await _SHUTTING_DOWN.response(request.request_id, request.trace_id)(
                scope, receive, answer.send
            )
    elif isinstance(exc, ClientDisconnect):
        # The caller hung up before its body arrived: nothing to answer, nothing broken.
        answer.status = 499
        logger.info("client went away in %s %s", scope["method"], route_template(scope))
    else:
        logger.exception("unhandled error in %s %s", scope["method"], route_template(scope))
        if answer.started:
            return
        problem = ProblemError(500, "internal-error", "Something went wrong on our side.")
        await problem.response(request.request_id, request.trace_id)(scope, receive, answer.send)


def _server_timing(request: RequestContext) -> str:
    """``app``: the gateway's own time, that is with no upstream or provider call in flight
    (calls made side by side count once); ``upstream`` and ``idp``: the sum of their calls."""
    elapsed = time.perf_counter() - request.started
    value = (
        f"app;dur={(elapsed - request.waited) * 1000:.2f}, "
        f"upstream;dur={request.upstream_seconds * 1000:.2f}, cache;desc={request.cache}"
    )
    if request.provider_calls:
        value += f", idp;dur={request.provider_seconds * 1000:.2f}"
    return value
