"""Arm ``starlette-static``: uvicorn and Starlette answering a constant body, the server ceiling.

The body is the upstream's captured flow page, read once at start from the file named by
``BENCH_BODY``: no upstream call, no decoding, no work per request beyond routing and sending.
What a Python gateway on this server stack cannot beat. Port of the shared harness's ``hello.py``
(which imported orjson without using it; nothing here needs a JSON library).

    BENCH_BODY=page.json uvicorn --app-dir bench/arms --factory starlette_static:create_app
"""

from __future__ import annotations

import os
from pathlib import Path

from shape import FLOWS_ROUTE
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create_app() -> Starlette:
    """The app, serving the bytes of the file ``BENCH_BODY`` names."""
    body = Path(os.environ["BENCH_BODY"]).read_bytes()

    async def flows(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route(FLOWS_ROUTE, flows)])
