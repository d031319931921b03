"""``create_app(settings)``: the BFF as an ASGI application.

Follow one request: :mod:`bff.middleware` (request id, raw-path guard, security headers) →
:mod:`bff.observability` (metrics) → the route in :mod:`bff.flows` → :class:`bff.services.Call`
(authenticate, authorize) → ``upstream_client`` → :mod:`bff.views` (reshape) → JSON. Errors on any
step become problem+json in :mod:`bff.problems`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import cache
from importlib import resources
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

import upstream_client as uc

from . import flows
from .cache import SingleFlightCache
from .catalog import Catalog
from .credentials import UpstreamCredentials
from .middleware import API_PREFIX, RequestContextMiddleware, request_id_of
from .observability import Metrics, MetricsMiddleware
from .principal import Authenticator
from .problems import ProblemError, not_found, problem_from_upstream
from .services import Services
from .settings import Settings

logger = logging.getLogger("bff.app")


def create_app(
    settings: Settings,
    *,
    authenticators: Sequence[Authenticator] = (),
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    credentials: UpstreamCredentials | None = None,
) -> Starlette:
    """Build the BFF.

    ``authenticators`` decide who is calling (tried in order); ``upstream_transport`` replaces the
    network to the backend (tests pass a mock or the sandbox's ASGI app); ``credentials`` replaces
    the upstream credential chosen by ``settings.upstream.credential``.
    """
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = uc.BackendClient(
            settings.upstream.base_url,
            timeout=uc.Timeout(
                connect=settings.upstream.connect_timeout,
                read=settings.upstream.read_timeout,
                write=settings.upstream.read_timeout,
                pool=settings.upstream.connect_timeout,
                total=settings.upstream.total_timeout,
            ),
            retries=uc.RetryConfig(
                max_attempts=settings.upstream.max_attempts,
                backoff_base=settings.upstream.retry_backoff_seconds,
            ),
            limits=uc.Limits(max_connections=settings.upstream.max_connections),
            tls=_tls(settings),
            transport=upstream_transport,
        )
        async with client:
            app.state.services = Services(
                settings=settings,
                client=client,
                catalog=Catalog(
                    client,
                    ttl=settings.cache.lookup_ttl_seconds,
                    maxsize=settings.cache.max_entries,
                ),
                responses=SingleFlightCache(
                    ttl=settings.cache.ttl_seconds, maxsize=settings.cache.max_entries
                ),
                credentials=credentials or UpstreamCredentials(settings.upstream.credential),
                authenticators=list(authenticators),
            )
            yield

    api_routes: list[Any] = [
        *flows.routes,
        Route("/openapi.json", openapi_document, methods=["GET"]),
    ]
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics.endpoint, methods=["GET"]),
            Mount(API_PREFIX, routes=api_routes),
        ],
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(MetricsMiddleware, metrics=metrics),
        ],
        exception_handlers={
            ProblemError: _problem_handler,
            uc.UpstreamError: _upstream_handler,
            HTTPException: _http_exception_handler,
        },
        lifespan=lifespan,
    )
    return app


def _tls(settings: Settings) -> uc.TLSConfig | None:
    upstream = settings.upstream
    if not (upstream.ca_file or upstream.cert_file):
        return None
    return uc.TLSConfig(
        cert_file=upstream.cert_file, key_file=upstream.key_file, ca_file=upstream.ca_file
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


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
    return problem_from_upstream(exc).response(request_id_of(request.scope))


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
