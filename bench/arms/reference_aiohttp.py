"""Arm ``reference-aiohttp``: a reshape proxy on raw aiohttp, no auth, no enrichment.

Each request reads the upstream's flow page through one pooled ``aiohttp.ClientSession``,
decodes it, reshapes every flow into the UI's camelCase view and encodes the page: the least a
Python proxy of this shape does. Port of the shared harness's ``rawaio.py``, with one change:
that one decodes and encodes with orjson, which is no dependency of this project, so this one
uses msgspec's untyped JSON decoder and encoder (a dependency of the project).

    uvicorn --app-dir bench/arms --factory reference_aiohttp:create_app  # BENCH_UPSTREAM=origin
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import aiohttp
import msgspec
from shape import FLOWS_ROUTE, reshape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create_app() -> Starlette:
    """The app; its upstream is ``BENCH_UPSTREAM`` (an origin such as ``http://127.0.0.1:9001``)."""
    upstream = os.environ["BENCH_UPSTREAM"]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=100)
        app.state.session = aiohttp.ClientSession(upstream, connector=connector)
        yield
        await app.state.session.close()

    async def flows(request: Request) -> Response:
        tenant_id = request.path_params["tid"]
        session: aiohttp.ClientSession = request.app.state.session
        async with session.get(f"/v1/tenants/{tenant_id}/delivery-flows") as upstream_answer:
            content = await upstream_answer.read()
        page = msgspec.json.decode(content)
        body = msgspec.json.encode(
            {
                "items": [reshape(flow) for flow in page["delivery_flows"]],
                "page": {"nextCursor": page["next_cursor"]},
            }
        )
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route(FLOWS_ROUTE, flows)], lifespan=lifespan)
