"""Fixtures for app tests: the BFF driven in-process, its upstream mocked with respx.

The helpers they build on are in :mod:`tests.support.gateway`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import respx

from tests.support.gateway import (
    CLUSTERS,
    DESTINATIONS,
    INGESTERS,
    UPSTREAM,
    BffFactory,
    running_bff,
)


@pytest.fixture
def upstream() -> respx.MockRouter:
    """The backend, mocked: clusters, ingesters and destinations of ten_acme answer by default."""
    router = respx.MockRouter(base_url=UPSTREAM, assert_all_called=False)
    router.get("/v1/tenants/ten_acme/clusters", name="clusters").respond(json=CLUSTERS)
    router.get("/v1/tenants/ten_acme/ingesters", name="ingesters").respond(json=INGESTERS)
    router.get("/v1/tenants/ten_acme/destinations", name="destinations").respond(json=DESTINATIONS)
    return router


@pytest.fixture
def bff(upstream: respx.MockRouter) -> BffFactory:
    """``async with bff(principal=…, settings=…) as client``: the BFF over the mocked upstream."""

    def factory(**kwargs: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return running_bff(httpx.MockTransport(upstream.async_handler), **kwargs)

    return factory
