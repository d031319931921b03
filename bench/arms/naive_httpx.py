"""Arm ``naive-httpx``: the textbook proxy, as a first version of a BFF would be written.

Stock ``httpx.AsyncClient`` (its own httpcore transport), stdlib ``json`` through
``response.json()`` and ``JSONResponse``, and one ``BaseHTTPMiddleware`` adding a request id:
the baseline a tuned gateway is measured against. Port of the shared harness's ``naive.py``
(which already used no orjson).

It runs in the project's environment, which has no ``sniffio`` (nothing here depends on it):
httpcore then tries ``import sniffio`` again, and fails, each time it asks which async library
runs, a few times a request. The shared harness's environment has sniffio. Measured back to
back on one machine (3 rounds each), that difference was within the noise at 32 connections
(105-119 against 90-131 requests/s) and at most about a fifth at one (196-267 against 206-329).

    uvicorn --app-dir bench/arms --factory naive_httpx:create_app  # BENCH_UPSTREAM=origin
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import httpx
from shape import FLOWS_ROUTE, reshape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class RequestId(BaseHTTPMiddleware):
    """Adds a (constant) request id: the kind of middleware a first version carries."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["x-request-id"] = "req_1"
        return response


def create_app() -> Starlette:
    """The app; its upstream is ``BENCH_UPSTREAM`` (an origin such as ``http://127.0.0.1:9001``)."""
    upstream = os.environ["BENCH_UPSTREAM"]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        app.state.client = httpx.AsyncClient(base_url=upstream, limits=limits)
        yield
        await app.state.client.aclose()

    async def flows(request: Request) -> Response:
        tenant_id = request.path_params["tid"]
        client: httpx.AsyncClient = request.app.state.client
        upstream_answer = await client.get(f"/v1/tenants/{tenant_id}/delivery-flows")
        page = upstream_answer.json()
        return JSONResponse(
            {
                "items": [reshape(flow) for flow in page["delivery_flows"]],
                "page": {"nextCursor": page["next_cursor"]},
            }
        )

    return Starlette(
        routes=[Route(FLOWS_ROUTE, flows)], middleware=[Middleware(RequestId)], lifespan=lifespan
    )
