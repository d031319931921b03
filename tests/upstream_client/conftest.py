from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import respx
from aiohttp import web

from tests.support.clock import FakeClock
from upstream_client import BackendClient, RetryConfig

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


def problem(status: int, slug: str, **extra: Any) -> httpx.Response:
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


@pytest.fixture
def fake_time() -> FakeClock:
    """The clients' clock: it moves only when a client sleeps, so retries never wait."""
    return FakeClock(1000.0)


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE, assert_all_called=False)


MakeClient = Callable[..., BackendClient]


@pytest.fixture
async def make_client(router: respx.Router, fake_time: FakeClock) -> AsyncIterator[MakeClient]:
    clients: list[BackendClient] = []

    def make(**kwargs: Any) -> BackendClient:
        kwargs.setdefault("transport", httpx.MockTransport(router.async_handler))
        kwargs.setdefault("sleep", fake_time.sleep)
        kwargs.setdefault("clock", fake_time)
        kwargs.setdefault("retries", RetryConfig(jitter=0.0))
        client = BackendClient(BASE, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: MakeClient) -> BackendClient:
    return make_client()
