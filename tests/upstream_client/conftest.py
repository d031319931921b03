from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx

from upstream_client import BackendClient, RetryConfig

BASE = "http://backend.test"
TENANT = "ten_acme"
CLUSTER = "plane_dev_us_east_1"
FLOWS_PATH = f"/v1/tenants/{TENANT}/delivery-flows"


class FakeTime:
    """A clock that only moves when the client sleeps, so retries never wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


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


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE, assert_all_called=False)


MakeClient = Callable[..., BackendClient]


@pytest.fixture
async def make_client(router: respx.Router, fake_time: FakeTime) -> AsyncIterator[MakeClient]:
    clients: list[BackendClient] = []

    def make(**kwargs: Any) -> BackendClient:
        kwargs.setdefault("transport", httpx.MockTransport(router.async_handler))
        kwargs.setdefault("sleep", fake_time.sleep)
        kwargs.setdefault("clock", fake_time.clock)
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
