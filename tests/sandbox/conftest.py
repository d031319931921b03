"""Fixtures for the sandbox tests: fresh in-process apps on a fake clock, and clients to call them.

The helpers they build on are in :mod:`tests.support.sandbox_app`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

import sandbox
from sandbox.config import SandboxSettings
from tests.support.clock import FakeClock
from tests.support.sandbox_app import dev_settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())  # mint() dates tokens by the real clock unless told


@pytest.fixture
async def make_client(
    clock: FakeClock,
) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """Builds clients over fresh in-process apps; closes everything at teardown."""
    clients: list[httpx.AsyncClient] = []
    apps: list[Any] = []

    def build(settings: SandboxSettings | None = None, **app_options: Any) -> httpx.AsyncClient:
        app_options.setdefault("clock", clock)
        app = sandbox.create_app(settings or dev_settings(), **app_options)
        apps.append(app)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test"
        )
        client.app = app  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()
    for app in apps:
        app.state.store.close()


@pytest.fixture
def client(make_client: Callable[..., httpx.AsyncClient]) -> httpx.AsyncClient:
    return make_client()
