"""``create_app(settings)``: the BFF as an ASGI application.

Follow one request: :mod:`bff.observability` (metrics) → :mod:`bff.middleware` (request id,
raw-path guard, security headers) → the route in :mod:`bff.flows` → :class:`bff.services.Call`
(authenticate, authorize) → ``upstream_client`` → :mod:`bff.views` (reshape) → JSON. Errors on
any step become problem+json in :mod:`bff.problems`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import cache
from importlib import resources
from typing import Any

import httpx
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

import upstream_client as uc

from . import console, flows
from .auth import Auth
from .auth import routes as auth_routes
from .cache import SingleFlightCache
from .catalog import Catalog
from .credentials import UpstreamCredentials
from .invalidation import Invalidation, LocalInvalidation, RedisInvalidation
from .jwt_validation import RedisReplayCache, ReplayCache
from .logins import LoginStore, MemoryLoginStore, RedisLoginStore
from .middleware import API_PREFIX, RequestContextMiddleware, request_id_of
from .observability import Metrics, MetricsMiddleware
from .oidc import OIDCClient
from .principal import Authenticator
from .problems import ProblemError, not_found, problem_from_upstream
from .rate_limit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from .refresh_locks import LocalRefreshLock, RedisRefreshLock, RefreshLock
from .services import ResponseKey, Services
from .sessions import MemorySessionStore, RedisSessionStore, SessionStore
from .settings import Settings
from .upstream_tokens import UpstreamTokenMinter, load_signing_key

logger = logging.getLogger("bff.app")


def create_app(
    settings: Settings,
    *,
    authenticators: Sequence[Authenticator] | None = None,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    idp_transport: httpx.AsyncBaseTransport | None = None,
    credentials: UpstreamCredentials | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """Build the BFF.

    ``authenticators`` replace the session cookie and bearer JWT authenticators (tests use a
    static principal); ``upstream_transport`` and ``idp_transport`` replace the network to the
    backend and to the identity provider (tests pass a mock or an in-process ASGI app);
    ``credentials`` replaces the upstream credential chosen by ``settings.upstream.credential``;
    ``clock`` (epoch seconds) drives session timeouts and token expiry, so tests can move time.
    """
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(_backend_client(settings, upstream_transport))
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=idp_transport,
                    timeout=httpx.Timeout(10.0, connect=3.0),
                    trust_env=False,
                    follow_redirects=False,
                )
            )
            redis = _redis(settings, stack)
            auth = _build_auth(settings, http, redis, clock)
            stack.push_async_callback(auth.sessions.aclose)
            responses: SingleFlightCache[ResponseKey, object] = SingleFlightCache(
                ttl=settings.cache.ttl_seconds, maxsize=settings.cache.max_entries
            )

            def forget(tenant_id: str, cluster_id: str) -> None:
                responses.invalidate(lambda key: key[:2] == (tenant_id, cluster_id))

            invalidation: Invalidation = LocalInvalidation(forget)
            if redis is not None:
                shared = RedisInvalidation(redis, forget)
                listener = asyncio.create_task(shared.listen(), name="cache-invalidation")
                stack.callback(listener.cancel)
                invalidation = shared
            app.state.auth = auth
            app.state.services = Services(
                settings=settings,
                client=client,
                catalog=Catalog(
                    client,
                    ttl=settings.cache.lookup_ttl_seconds,
                    maxsize=settings.cache.max_entries,
                ),
                responses=responses,
                invalidation=invalidation,
                rate_limiter=_rate_limiter(settings, redis, clock),
                credentials=credentials
                or UpstreamCredentials(settings.upstream.credential, auth.minter),
                authenticators=(
                    [auth.bearer, auth.session] if authenticators is None else list(authenticators)
                ),
            )
            yield

    api_routes: list[Any] = [
        *flows.routes,
        *auth_routes,
        Route("/openapi.json", openapi_document, methods=["GET"]),
    ]
    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics.endpoint, methods=["GET"]),
            Mount(API_PREFIX, routes=api_routes),
            *(console.routes if settings.bff.console else []),
        ],
        middleware=[
            # Outermost, so that requests refused by the path guard are counted too.
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(RequestContextMiddleware, hsts=settings.secure_cookies),
        ],
        exception_handlers={
            ProblemError: _problem_handler,
            uc.UpstreamError: _upstream_handler,
            RedisError: _store_unavailable_handler,
            HTTPException: _http_exception_handler,
        },
        lifespan=lifespan,
    )


def _backend_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None
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
        tls=_tls(settings),
        transport=transport,
    )


def _redis(settings: Settings, stack: AsyncExitStack) -> Redis | None:
    """The Redis shared by sessions, sign-ins, refresh locks and cache invalidation, if any."""
    if settings.sessions.backend != "redis" or not settings.sessions.redis_url:
        return None
    # A blocking pool makes a burst wait for a connection instead of failing at the limit.
    pool = BlockingConnectionPool.from_url(
        settings.sessions.redis_url, max_connections=settings.sessions.redis_max_connections
    )
    redis = Redis.from_pool(pool)
    stack.push_async_callback(redis.aclose)
    return redis


def _rate_limiter(
    settings: Settings, redis: Redis | None, clock: Callable[[], float]
) -> RateLimiter | None:
    limit = settings.bff.rate_limit_per_minute
    if limit == 0:
        return None
    if redis is not None:
        return RedisRateLimiter(redis, limit, clock=clock)
    return MemoryRateLimiter(limit, clock=clock)


def _build_auth(
    settings: Settings,
    http: httpx.AsyncClient,
    redis: Redis | None,
    clock: Callable[[], float],
) -> Auth:
    oidc = OIDCClient(
        issuer=settings.oidc.issuer,
        client_id=settings.oidc.client_id,
        client_secret=settings.oidc.client_secret,
        scopes=settings.oidc.scopes,
        http=http,
        clock=clock,
    )
    idle = settings.sessions.idle_timeout_seconds
    absolute = settings.sessions.absolute_timeout_seconds
    sessions: SessionStore
    logins: LoginStore
    refresh_lock: RefreshLock
    if redis is not None:
        sessions = RedisSessionStore(
            redis, idle_timeout=idle, absolute_timeout=absolute, clock=clock
        )
        logins = RedisLoginStore(redis)
        refresh_lock = RedisRefreshLock(redis)
        replay_cache: ReplayCache | None = RedisReplayCache(redis)
    else:
        sessions = MemorySessionStore(idle_timeout=idle, absolute_timeout=absolute, clock=clock)
        logins = MemoryLoginStore()
        refresh_lock = LocalRefreshLock()
        replay_cache = None  # the validator keeps its own, in memory
    minter = None
    if settings.upstream.credential == "internal-jwt":
        jwt = settings.internal_jwt
        minter = UpstreamTokenMinter(
            issuer=jwt.issuer or settings.bff.public_origin.rstrip("/"),
            audience=jwt.audience,
            ttl=jwt.ttl_seconds,
            key=load_signing_key(jwt.signing_key_file) if jwt.signing_key_file else None,
            clock=clock,
        )
    return Auth(
        settings,
        oidc=oidc,
        sessions=sessions,
        logins=logins,
        refresh_lock=refresh_lock,
        replay_cache=replay_cache,
        minter=minter,
        clock=clock,
    )


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


async def readyz(request: Request) -> Response:
    """Ready to serve: the upstream answers, the provider's metadata loads, the store answers."""
    services: Services = request.app.state.services
    auth: Auth = request.app.state.auth
    checks: dict[str, str] = {}

    async def check(name: str, probe: Awaitable[object]) -> None:
        try:
            async with asyncio.timeout(2.0):
                ok = await probe
            checks[name] = "ok" if ok is not False else "failing"
        except Exception as exc:  # a probe must never take the endpoint down
            checks[name] = f"failing: {type(exc).__name__}"

    await asyncio.gather(
        check("upstream", services.client.ping()),
        check("identityProvider", auth.oidc.metadata()),
        check("sessions", auth.sessions.ping()),
    )
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
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
    return exc.response(request_id_of(request.scope))


async def _upstream_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, uc.UpstreamError)
    relayed = request.app.state.services.credentials.relays_caller_token
    return problem_from_upstream(exc, relayed=relayed).response(request_id_of(request.scope))


async def _store_unavailable_handler(request: Request, exc: Exception) -> Response:
    logger.error("session store unavailable: %s", type(exc).__name__)
    problem = ProblemError(
        503,
        "upstream-unavailable",
        "Sessions are temporarily unavailable; try again shortly.",
        headers={"Retry-After": "5"},
    )
    return problem.response(request_id_of(request.scope))


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    request_id = request_id_of(request.scope)
    if exc.status_code == 405:
        problem = ProblemError(
            405,
            "method-not-allowed",
            f"{request.method} is not allowed here.",
            headers=exc.headers,
        )
        return problem.response(request_id)
    if exc.status_code == 404:
        return not_found().response(request_id)
    logger.warning("unexpected HTTP exception %s: %s", exc.status_code, exc.detail)
    return ProblemError(400, "validation-error", str(exc.detail)).response(request_id)
