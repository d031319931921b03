"""``create_app(settings)``: the BFF as an ASGI application.

Follow one request: :mod:`bff.middleware` (the edge: request id, trace context, raw-path guard,
security headers, Server-Timing, metrics, the access line) → the route in :mod:`bff.flows` →
:class:`bff.services.Call` (authenticate, authorize) → ``upstream_client`` → :mod:`bff.views`
(reshape) → JSON. Errors on any step become problem+json in :mod:`bff.problems`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import cache
from importlib import resources
from types import FrameType
from typing import TYPE_CHECKING, NamedTuple

import httpx
import msgspec
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

import upstream_client as uc

from . import auth, console, flows
from .audit import AuditLog, Auditor, FileSink, Sink, StdoutSink
from .auth import (
    Authenticator,
    BearerAuthenticator,
    OIDCClient,
    SignIn,
    open_sign_in,
    provider_tls,
)
from .catalog import Catalog
from .context import CallObserver, ObservedTransport
from .credentials import UpstreamCredentials, minter_for
from .credentials import routes as credentials_routes
from .middleware import EdgeMiddleware, request_id_of, trace_id_of
from .observability import Metrics, ServiceGauges
from .paths import API_PREFIX
from .problems import DEFAULT_RETRY_AFTER, ProblemError, not_found, problem_from_upstream
from .services import MicroCache, Services
from .settings import Settings
from .state import open_stores

if TYPE_CHECKING:
    from .otel import OtelSpans

logger = logging.getLogger("bff.app")


def create_app(
    settings: Settings,
    *,
    authenticators: Sequence[Authenticator] | None = None,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    idp_transport: httpx.AsyncBaseTransport | None = None,
    credentials: UpstreamCredentials | None = None,
    clock: Callable[[], float] = time.time,
    drain_on_signals: bool = False,
) -> Starlette:
    """Build the BFF.

    ``authenticators`` replace the session cookie and bearer JWT authenticators (tests use a
    static principal); ``upstream_transport`` and ``idp_transport`` replace the network to the
    backend and to the identity provider (tests pass a mock or an in-process ASGI app);
    ``credentials`` replaces the upstream credential chosen by ``settings.upstream.credential``;
    ``clock`` (epoch seconds) drives session timeouts and token expiry, so tests can move time.
    ``drain_on_signals`` (``bff serve``): on SIGTERM or SIGINT, ``/readyz`` answers 503 at once
    and the session event streams end, before the server stops accepting connections.
    """
    metrics = Metrics()
    spans = _spans(settings)
    seams = _Seams(authenticators, upstream_transport, idp_transport, credentials, clock)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.draining = False
        async with AsyncExitStack() as stack:
            if spans is not None:
                stack.callback(spans.shutdown)
            app.state.signin, app.state.services = await open_services(
                stack, settings, metrics=metrics, spans=spans, seams=seams
            )
            # A stream never finishes by itself: the server would wait out its whole grace.
            end_streams = app.state.signin.events.close
            stack.callback(end_streams)
            if drain_on_signals:
                stack.callback(_drain_on_signals(app, end_streams))
            yield

    app = _Gateway(
        routes=_routes(settings, metrics),
        middleware=[
            Middleware(EdgeMiddleware, metrics=metrics, hsts=settings.secure_cookies, spans=spans)
        ],
        exception_handlers={
            ProblemError: _problem_handler,
            uc.UpstreamError: _upstream_handler,
            RedisError: _store_unavailable_handler,
            HTTPException: _http_exception_handler,
        },
        lifespan=lifespan,
    )
    # A path with a trailing slash is not found, not redirected: Starlette would build the
    # redirect from the request's Host header, which the caller chooses.
    app.router.redirect_slashes = False
    return app


class _Seams(NamedTuple):
    """What a test (or a tool embedding the gateway) may put in place of the real thing."""

    authenticators: Sequence[Authenticator] | None
    upstream_transport: httpx.AsyncBaseTransport | None
    idp_transport: httpx.AsyncBaseTransport | None
    credentials: UpstreamCredentials | None
    clock: Callable[[], float]


async def open_services(
    stack: AsyncExitStack,
    settings: Settings,
    *,
    metrics: Metrics,
    spans: OtelSpans | None,
    seams: _Seams,
) -> tuple[SignIn, Services]:
    """Open what the app's handlers share, each closed by ``stack`` in reverse order: the
    backend client, the provider's HTTP client, the shared stores, the audit trail."""
    clock = seams.clock
    responses = MicroCache.for_settings(settings)
    client = await stack.enter_async_context(
        _backend_client(settings, seams.upstream_transport, CallObserver("upstream", spans))
    )
    http = await stack.enter_async_context(_provider_http(settings, seams.idp_transport, spans))
    stores = await stack.enter_async_context(
        open_stores(
            settings,
            forget=responses.forget,
            clock=clock,
            on_rate_limit_fallback=metrics.rate_limit_fallbacks.inc,
        )
    )
    audit_log = AuditLog(_audit_sink(settings), observe=metrics.audit_observed)
    stack.callback(audit_log.close)
    audit = Auditor(
        audit_log, issuer=settings.oidc.issuer, trusted_proxies=settings.bff.trusted_proxies
    )
    oidc = OIDCClient.for_settings(settings.oidc, http, clock=clock)
    await oidc.refuse_unless_taken()
    signin = open_sign_in(
        settings, oidc=oidc, stores=stores, audit=audit, metrics=metrics, clock=clock
    )
    gauges = ServiceGauges(sessions=stores.sessions, breaker=client.breaker, streams=signin.events)
    stack.callback(metrics.watch(gauges))
    authenticators = seams.authenticators
    if authenticators is None:
        authenticators = [BearerAuthenticator(settings, oidc.discovery), signin.session_auth]
    services = Services(
        settings=settings,
        client=client,
        catalog=Catalog(
            client, ttl=settings.cache.lookup_ttl_seconds, maxsize=settings.cache.max_entries
        ),
        responses=responses,
        invalidation=stores.invalidation,
        rate_limiter=stores.rate_limiter,
        credentials=seams.credentials
        or UpstreamCredentials.for_settings(settings, minter_for(settings, clock)),
        audit=audit,
        authenticators=list(authenticators),
    )
    return signin, services


def _routes(settings: Settings, metrics: Metrics) -> list[BaseRoute]:
    """The API first, at its full paths (the router tries routes in order, and a Mount would
    build a scope of its own for every call); then the operators' routes and the console."""
    api_routes: list[Route] = [
        *flows.routes,
        *auth.routes,
        *credentials_routes,
        Route("/openapi.json", openapi_document, methods=["GET"]),
    ]
    return [
        *(_under(API_PREFIX, route) for route in api_routes),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        *(console.routes if settings.bff.console else []),
    ]


def _provider_http(
    settings: Settings, transport: httpx.AsyncBaseTransport | None, spans: OtelSpans | None
) -> httpx.AsyncClient:
    """The HTTP client of the identity provider's endpoints."""
    return httpx.AsyncClient(
        transport=ObservedTransport(
            transport or provider_tls(settings.oidc) or httpx.AsyncHTTPTransport(),
            CallObserver("provider", spans),
        ),
        timeout=httpx.Timeout(settings.oidc.timeout_seconds),
        trust_env=False,
        follow_redirects=False,
    )


class _Gateway(Starlette):
    """Starlette with :class:`EdgeMiddleware` outermost. The edge answers the last-resort 500
    itself, so Starlette's ``ServerErrorMiddleware``, which would wrap every answer once more on
    the way out, is left out."""

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        assert isinstance(stack, ServerErrorMiddleware) and isinstance(stack.app, EdgeMiddleware)
        return stack.app


def _under(prefix: str, route: Route) -> Route:
    return Route(prefix + route.path, route.endpoint, methods=route.methods, name=route.name)


def _spans(settings: Settings) -> OtelSpans | None:
    if settings.tracing.otlp_endpoint is None:
        return None  # nothing of OpenTelemetry is imported
    from .otel import OtelSpans

    return OtelSpans(settings.tracing)


def _backend_client(
    settings: Settings,
    transport: httpx.AsyncBaseTransport | None,
    observer: uc.AttemptObserver,
) -> uc.BackendClient:
    upstream = settings.upstream
    return uc.BackendClient(
        upstream.base_url,
        timeout=uc.Timeout(
            connect=upstream.connect_timeout,
            read=upstream.read_timeout,
            write=upstream.read_timeout,
            pool=upstream.connect_timeout,
            total=upstream.total_timeout,
        ),
        retries=uc.RetryConfig(
            max_attempts=upstream.max_attempts, backoff_base=upstream.retry_backoff_seconds
        ),
        limits=uc.Limits(max_connections=upstream.max_connections),
        breaker=uc.BreakerConfig(**msgspec.structs.asdict(upstream.breaker)),
        tls=_tls(settings),
        transport=transport,
        observer=observer,
    )


def _audit_sink(settings: Settings) -> Sink:
    if settings.audit.sink == "file" and settings.audit.path:
        return FileSink(settings.audit.path, fsync=settings.audit.fsync)
    return StdoutSink()


def _tls(settings: Settings) -> uc.TLSConfig | None:
    upstream = settings.upstream
    if not (upstream.ca_file or upstream.cert_file):
        return None
    return uc.TLSConfig(
        cert_file=upstream.cert_file, key_file=upstream.key_file, ca_file=upstream.ca_file
    )


async def healthz(request: Request) -> Response:
    """Alive: the process answers. Says nothing about its dependencies (that is /readyz)."""
    return JSONResponse({"status": "ok"})


def _drain_on_signals(app: Starlette, end_streams: Callable[[], None]) -> Callable[[], None]:
    """Wrap the server's SIGTERM and SIGINT handlers: mark the app draining, end the event
    streams (in the event loop, woken for it), then let the server shut down as it does. Returns
    what puts the server's handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: FrameType | None) -> None:
        if not app.state.draining:
            app.state.draining = True
            logger.info("%s: draining; readiness now says 503", signal.Signals(signum).name)
            loop.call_soon_threadsafe(end_streams)
        server_handler = previous[signal.Signals(signum)]
        if callable(server_handler):
            server_handler(signum, frame)

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


async def readyz(request: Request) -> Response:
    """Ready to serve: not shutting down, the upstream answers (its circuit is not open), the
    provider's metadata loads, the store answers."""
    services: Services = request.app.state.services
    signin: SignIn = request.app.state.signin
    checks: dict[str, str] = {}
    if request.app.state.draining:
        checks["shutdown"] = "draining"

    async def check(name: str, probe: Awaitable[object]) -> None:
        try:
            async with asyncio.timeout(2.0):
                ok = await probe
            checks[name] = "ok" if ok is not False else "failing"
        except Exception as exc:  # a probe must never take the endpoint down
            checks[name] = f"failing: {type(exc).__name__}"

    breaker = services.client.breaker
    if breaker.state is uc.BreakerState.OPEN:
        # Calls fail fast now; a probe of our own would not change that.
        checks["upstream"] = f"failing: circuit open, next probe in {breaker.retry_in:.1f} s"
    await asyncio.gather(
        *([] if "upstream" in checks else [check("upstream", services.client.ping())]),
        check("identityProvider", signin.oidc.tokens.check_method()),
        check("sessions", signin.sessions.store.ping()),
    )
    if signin.oidc.tokens.client_refused and checks["identityProvider"] == "ok":
        checks["identityProvider"] = "failing: it refuses this client's id or secret"
    ready = all(value == "ok" for value in checks.values())
    # Reported, but no reason to leave the rotation: one caller's odd token could cause it.
    warnings: dict[str, str] = {}
    if refusals := services.credentials.refusals():
        warnings["upstreamCredentials"] = refusals
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks, "warnings": warnings},
        status_code=200 if ready else 503,
    )


@cache
def _openapi_bytes() -> bytes:
    text = resources.files("bff").joinpath("openapi.json").read_text(encoding="utf-8")
    return json.dumps(json.loads(text), separators=(",", ":")).encode()


async def openapi_document(request: Request) -> Response:
    return Response(_openapi_bytes(), media_type="application/json")


async def _problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return _answer(request, exc)


def _answer(request: Request, problem: ProblemError) -> Response:
    """problem+json, or, to a browser that navigated to a sign-in route, a page."""
    ids = _ids(request)
    if auth.wants_page(request):
        return auth.failure_page(problem, request, ids[0])
    return problem.response(*ids)


async def _upstream_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, uc.UpstreamError)
    if isinstance(exc, uc.AuthenticationError):
        request.app.state.services.credentials.refused(request_id_of(request.scope))
    return problem_from_upstream(exc).response(*_ids(request))


async def _store_unavailable_handler(request: Request, exc: Exception) -> Response:
    logger.error("session store unavailable: %s", type(exc).__name__)
    problem = ProblemError(
        503,
        "upstream-unavailable",
        "Sessions are temporarily unavailable; try again shortly.",
        headers={"Retry-After": str(DEFAULT_RETRY_AFTER)},
    )
    return _answer(request, problem)


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    ids = _ids(request)
    if exc.status_code == 405:
        problem = ProblemError(
            405,
            "method-not-allowed",
            f"{request.method} is not allowed here.",
            headers=exc.headers,
        )
        return problem.response(*ids)
    if exc.status_code == 404:
        return not_found().response(*ids)
    logger.warning("unexpected HTTP exception %s: %s", exc.status_code, exc.detail)
    return ProblemError(400, "validation-error", str(exc.detail)).response(*ids)


def _ids(request: Request) -> tuple[str | None, str | None]:
    """The request id and trace id that a problem+json answer names."""
    return request_id_of(request.scope), trace_id_of(request.scope)
