"""The BFF driven in-process (ASGI), its upstream mocked with respx.

- Where it is: :data:`BFF` (its origin), :data:`API` and the routes under it (:data:`FLOWS`, the
  sign-in routes), :data:`UPSTREAM` and :data:`UP_FLOWS` (the mocked backend).
- Who calls it: :data:`ALICE`, :data:`BOB`, :data:`CAROL`, principals of the static authenticator.
- What the upstream holds: the catalog of ten_acme (:data:`CLUSTERS`, :data:`INGESTERS`,
  :data:`DESTINATIONS`) and :func:`upstream_flow`.
- :func:`make_settings`: test settings, changed by section.
- :func:`in_process`: the app over an upstream transport, lifespan started, with a client to call
  it; :func:`running_bff` yields only the client, as one principal.
- :func:`assert_problem`: a response is the gateway's problem+json of that status and type.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette

from bff import Principal, create_app
from bff.auth import Authenticator, static_authenticator
from bff.settings import Settings, settings_from_mapping

UPSTREAM = "http://upstream.test"
BFF = "http://127.0.0.1:8000"
API = "/api/bff/v1"
FLOWS = f"{API}/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flows"
UP_FLOWS = "/v1/tenants/ten_acme/delivery-flows"

LOGIN = f"{API}/auth/login"
CALLBACK = f"{API}/auth/callback"
CALLBACK_URL = f"{BFF}{CALLBACK}"
WHOAMI = f"{API}/auth/session"
LOGOUT = f"{API}/auth/logout"
SESSIONS = f"{API}/auth/sessions"
BACKCHANNEL = f"{API}/auth/backchannel-logout"

PROBLEM = "application/problem+json"
ERRORS = "https://api.zen-mesh.io/errors/"

RW = frozenset({"read:delivery-flows", "write:delivery-flows"})
RO = frozenset({"read:delivery-flows"})
ALICE = Principal(
    subject="alice", tenants={"ten_acme": RW}, via="static", access_token="zen_key_dev_acme_rw"
)
BOB = Principal(
    subject="bob", tenants={"ten_acme": RO}, via="static", access_token="zen_key_dev_acme_ro"
)
CAROL = Principal(
    subject="carol", tenants={"ten_globex": RW}, via="static", access_token="zen_key_dev_globex_rw"
)

CLUSTERS = {
    "clusters": [
        {
            "id": "plane_dev_us_east_1",
            "name": "Dev US East 1",
            "region": "us-east-1",
            "status": "active",
        },
        {
            "id": "plane_dev_eu_west_1",
            "name": "Dev EU West 1",
            "region": "eu-west-1",
            "status": "active",
        },
    ],
    "next_cursor": None,
}
INGESTERS = {
    "ingesters": [
        {
            "id": "ing_stripe_prod",
            "name": "Stripe production",
            "type": "stripe",
            "cluster_id": "plane_dev_us_east_1",
        },
        {
            "id": "ing_github_ci",
            "name": "GitHub CI",
            "type": "github",
            "cluster_id": "plane_dev_us_east_1",
        },
    ],
    "next_cursor": None,
}
DESTINATIONS = {
    "destinations": [
        {
            "id": "dest_orders_api",
            "name": "Orders API",
            "url": "https://orders.example/h",
            "cluster_id": "plane_dev_us_east_1",
        },
    ],
    "next_cursor": None,
}


def upstream_flow(
    flow_id: str = "flow_1", *, cluster_id: str = "plane_dev_us_east_1", version: int = 1, **kw: Any
) -> dict[str, Any]:
    return {
        "id": flow_id,
        "tenant_id": "ten_acme",
        "cluster_id": cluster_id,
        "name": kw.get("name", "stripe-to-app"),
        "source_id": kw.get("source_id", "ing_stripe_prod"),
        "destination_id": kw.get("destination_id", "dest_orders_api"),
        "config": {"retry_policy": {"max_attempts": 3, "backoff_seconds": 10}},
        "version": version,
        "created_at": "2026-11-01T10:00:00Z",
        "updated_at": "2026-11-01T10:00:00Z",
    }


def make_settings(**sections: dict[str, Any]) -> Settings:
    data: dict[str, dict[str, Any]] = {
        # Tests make many calls as one principal; the rate limit has tests of its own.
        "bff": {"public_origin": BFF, "rate_limit_per_minute": 0},
        "upstream": {"base_url": UPSTREAM, "credential": "relay", "retry_backoff_seconds": 0},
        "oidc": {"client_secret": "test-client-secret"},
        "cache": {"ttl_seconds": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return settings_from_mapping(data)


# These app tests never sign in: the identity provider answers nothing, at no cost.
NO_IDP = httpx.MockTransport(lambda request: httpx.Response(503))


@dataclass
class Running:
    app: Starlette
    client: httpx.AsyncClient


@asynccontextmanager
async def in_process(
    transport: httpx.AsyncBaseTransport,
    *,
    authenticators: list[Authenticator],
    settings: Settings | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Running]:
    """The BFF over ``transport`` (the upstream), lifespan started, with a client to call it."""
    app = create_app(
        settings or make_settings(),
        authenticators=authenticators,
        upstream_transport=transport,
        idp_transport=NO_IDP,
        clock=clock,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BFF) as client,
    ):
        yield Running(app, client)


@asynccontextmanager
async def running_bff(
    transport: httpx.AsyncBaseTransport,
    *,
    principal: Principal | None = ALICE,
    authenticators: list[Authenticator] | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    if authenticators is None:
        authenticators = [static_authenticator(principal)] if principal else []
    async with in_process(transport, authenticators=authenticators, settings=settings) as running:
        yield running.client


BffFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
"""What the ``bff`` fixture is: ``async with bff(principal=…, settings=…) as client``."""


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == ERRORS + slug, body
    assert body["status"] == status
    assert "location" not in response.headers
    return body
