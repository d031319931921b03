"""Fixtures for the client tests: the backend mocked with respx, clients on a fake clock.

The helpers they build on are in :mod:`tests.support.backend`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from tests.support.backend import BASE, MakeClient
from tests.support.clock import FakeClock
from upstream_client import BackendClient, RetryConfig


@pytest.fixture
def fake_time() -> FakeClock:
    """The clients' clock: it moves only when a client sleeps, so retries never wait."""
    return FakeClock(1000.0)


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE, assert_all_called=False)


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
