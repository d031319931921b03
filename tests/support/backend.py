"""The backend API as the client's tests fake it.

Where it is (:data:`BASE`), what it holds (:data:`TENANT`, :data:`CLUSTER`, :data:`FLOWS_PATH`),
what it answers (:func:`flow_json`, :func:`problem_response`); :func:`serving_on_loopback` serves
an aiohttp app standing in for it on a loopback port; :data:`MakeClient` is the type of the
``make_client`` fixture.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from aiohttp import web

from upstream_client import BackendClient

BASE = "http://backend.test"
TENANT = "ten_acme"
CLUSTER = "plane_dev_us_east_1"
FLOWS_PATH = f"/v1/tenants/{TENANT}/delivery-flows"


def flow_json(flow_id: str = "flow_1", version: int = 1, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": flow_id,
        "tenant_id": TENANT,
        "cluster_id": CLUSTER,
        "name": f"name-{flow_id}",
        "source_id": "ing_stripe_prod",
        "destination_id": "dest_orders_api",
        "config": {"retry_policy": {"max_attempts": 3, "backoff_seconds": 10}},
        "version": version,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-02T00:00:00Z",
    }
    body.update(overrides)
    return body


def problem_response(status: int, slug: str, **extra: Any) -> httpx.Response:
    """The backend's problem+json answer of ``status`` with the error type ``slug``."""
    body = {
        "type": f"https://api.zen-mesh.io/errors/{slug}",
        "title": slug.replace("-", " ").title(),
        "status": status,
        "detail": f"{slug} happened",
        "instance": "req_upstream",
        **extra,
    }
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


@asynccontextmanager
async def serving_on_loopback(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """``app`` served in this process on a free loopback port for the block; yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


MakeClient = Callable[..., BackendClient]
