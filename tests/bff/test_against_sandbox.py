"""The BFF over the real sandbox backend, in-process: the UI's story for one flow, end to end.

The upstream credential is one of the sandbox's development API keys, relayed as the principal's
access token (credential mode ``relay``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

import sandbox
from bff import Principal
from tests.support.gateway import ALICE, API, BOB, FLOWS, RO, running_bff

DEV_CONFIG = Path(__file__).resolve().parents[2] / "config" / "dev.toml"
EU_FLOWS = f"{API}/tenants/ten_acme/clusters/plane_dev_eu_west_1/delivery-flows"
BODY = {
    "name": "stripe-to-orders",
    "sourceId": "ing_stripe_prod",
    "destinationId": "dest_orders_api",
    "retryPolicy": {"maxAttempts": 5, "backoffSeconds": 30},
}
# Bob's scopes, but a key the sandbox would let write: only the BFF stands in the way.
BOB_WITH_RW_KEY = Principal(
    subject="bob", tenants={"ten_acme": RO}, via="static", access_token="zen_key_dev_acme_rw"
)


class CountingASGITransport(httpx.ASGITransport):
    """The sandbox in-process, counting the requests the BFF sends it."""

    def __init__(self, app: Starlette) -> None:
        super().__init__(app)
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await super().handle_async_request(request)


@pytest.fixture
async def sandbox_app() -> AsyncIterator[Starlette]:
    # create_app opens the database itself; the lifespan only closes it.
    app = sandbox.create_app(sandbox.load_settings(DEV_CONFIG, db=":memory:"))
    async with app.router.lifespan_context(app):
        yield app


Over = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def over_sandbox(sandbox_app: Starlette) -> tuple[Over, CountingASGITransport]:
    transport = CountingASGITransport(sandbox_app)

    @asynccontextmanager
    async def connect(principal: Principal = ALICE) -> AsyncIterator[httpx.AsyncClient]:
        async with running_bff(transport, principal=principal) as client:
            yield client

    return connect, transport


async def test_one_flow_from_creation_to_deletion(
    over_sandbox: tuple[Over, CountingASGITransport],
) -> None:
    connect, _ = over_sandbox
    async with connect() as client:
        created = await client.post(FLOWS, json=BODY, headers={"Idempotency-Key": "ui-create-1"})
        assert created.status_code == 201, created.text
        flow: dict[str, Any] = created.json()
        flow_url = created.headers["location"]
        assert flow_url == f"{FLOWS}/{flow['id']}"
        assert created.headers["etag"]
        assert flow["source"] == {"id": "ing_stripe_prod", "name": "Stripe production"}
        assert flow["destination"] == {"id": "dest_orders_api", "name": "Orders API"}
        assert flow["retryPolicy"] == {"maxAttempts": 5, "backoffSeconds": 30}
        assert flow["clusterId"] == "plane_dev_us_east_1"
        assert flow["permissions"] == {"update": True, "delete": True}

        # A retry of the same create with the same key does not make a second flow.
        replayed = await client.post(FLOWS, json=BODY, headers={"Idempotency-Key": "ui-create-1"})
        assert replayed.status_code == 201
        assert replayed.json()["id"] == flow["id"]

        listed = await client.get(FLOWS)
        assert listed.status_code == 200
        assert [item["id"] for item in listed.json()["items"]] == [flow["id"]]
        assert listed.json()["items"][0] == flow

        got = await client.get(flow_url)
        assert got.status_code == 200
        assert got.json() == flow
        etag = got.headers["etag"]
        assert etag == created.headers["etag"]
        not_modified = await client.get(flow_url, headers={"If-None-Match": etag})
        assert not_modified.status_code == 304

        renamed = {**BODY, "name": "stripe-to-billing", "destinationId": "dest_billing_svc"}
        updated = await client.put(flow_url, json=renamed, headers={"If-Match": etag})
        assert updated.status_code == 200, updated.text
        assert updated.json()["name"] == "stripe-to-billing"
        assert updated.json()["destination"] == {
            "id": "dest_billing_svc",
            "name": "Billing service",
        }
        assert updated.headers["etag"] != etag

        # A second tab still holding the first version loses: 412, nothing overwritten.
        stale = await client.put(
            flow_url, json={**BODY, "name": "lost-update"}, headers={"If-Match": etag}
        )
        assert stale.status_code == 412
        assert stale.json()["type"] == "https://api.zen-mesh.io/errors/precondition-failed"
        assert stale.json()["instance"] == stale.headers["x-request-id"]
        assert (await client.get(flow_url)).json()["name"] == "stripe-to-billing"

        stale_delete = await client.delete(flow_url, headers={"If-Match": etag})
        assert stale_delete.status_code == 412
        deleted = await client.delete(flow_url, headers={"If-Match": updated.headers["etag"]})
        assert deleted.status_code == 204
        gone = await client.get(flow_url)
        assert gone.status_code == 404
        assert gone.json()["type"] == "https://api.zen-mesh.io/errors/not-found"
        assert (await client.get(FLOWS)).json()["items"] == []


async def test_duplicate_name_is_409(over_sandbox: tuple[Over, CountingASGITransport]) -> None:
    connect, _ = over_sandbox
    async with connect() as client:
        first = await client.post(FLOWS, json=BODY)
        second = await client.post(FLOWS, json=BODY)
        # The same name in another cluster is fine.
        elsewhere = await client.post(
            EU_FLOWS,
            json={**BODY, "sourceId": "ing_shopify_eu", "destinationId": "dest_eu_warehouse"},
        )
    assert first.status_code == 201
    assert second.status_code == 409
    problem = second.json()
    assert problem["type"] == "https://api.zen-mesh.io/errors/conflict"
    assert problem["instance"] == second.headers["x-request-id"]
    assert elsewhere.status_code == 201, elsewhere.text
    assert elsewhere.json()["source"] == {"id": "ing_shopify_eu", "name": "Shopify EU"}


async def test_source_of_another_cluster_is_a_field_error(
    over_sandbox: tuple[Over, CountingASGITransport],
) -> None:
    connect, _ = over_sandbox
    async with connect() as client:
        response = await client.post(FLOWS, json={**BODY, "sourceId": "ing_shopify_eu"})
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"] == "https://api.zen-mesh.io/errors/validation-error"
    [error] = problem["errors"]
    assert error["field"] == "sourceId"
    assert error["code"] == "not_found"
    # Field names are the UI's; ids inside the message stay exactly as they are.
    assert "source_id" not in response.text
    assert "plane_dev_us_east_1" in error["message"]
    assert problem["detail"].startswith("sourceId: ")


async def test_paging_through_every_flow(over_sandbox: tuple[Over, CountingASGITransport]) -> None:
    connect, _ = over_sandbox
    names = [f"flow-{n:02}" for n in range(7)]
    async with connect() as client:
        for name in names:
            created = await client.post(FLOWS, json={**BODY, "name": name})
            assert created.status_code == 201, created.text
        seen: list[str] = []
        pages: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "3"}
        while True:
            response = await client.get(FLOWS, params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            pages.append(body["page"])
            seen += [item["name"] for item in body["items"]]
            if not body["page"]["hasMore"]:
                break
            params = {"limit": "3", "cursor": body["page"]["nextCursor"]}
    assert sorted(seen) == names
    assert len(seen) == len(set(seen))
    assert [len(p) for p in pages] == [3, 3, 3]
    assert [(p["limit"], p["hasMore"]) for p in pages] == [(3, True), (3, True), (3, False)]
    assert pages[-1]["nextCursor"] is None


async def test_read_only_user_cannot_create_and_nothing_reaches_the_sandbox(
    over_sandbox: tuple[Over, CountingASGITransport],
) -> None:
    connect, transport = over_sandbox
    for principal in (BOB, BOB_WITH_RW_KEY):
        async with connect(principal) as client:
            response = await client.post(FLOWS, json=BODY)
            assert response.status_code == 403
            assert response.json()["required_scope"] == "write:delivery-flows"
    assert transport.requests == []
    async with connect(BOB) as client:
        listed = await client.get(FLOWS)
    assert listed.status_code == 200
    assert listed.json()["items"] == []
    assert all(
        r.headers["authorization"] == "Bearer zen_key_dev_acme_ro" for r in transport.requests
    )


async def test_the_sandbox_backs_the_read_endpoints(
    over_sandbox: tuple[Over, CountingASGITransport],
) -> None:
    connect, _ = over_sandbox
    async with connect(BOB) as client:
        clusters = await client.get(f"{API}/tenants/ten_acme/clusters")
        options = await client.get(
            f"{API}/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flow-options"
        )
        foreign = await client.get(
            f"{API}/tenants/ten_acme/clusters/plane_globex_main/delivery-flows"
        )
    assert {c["id"] for c in clusters.json()["items"]} == {
        "plane_dev_us_east_1",
        "plane_dev_eu_west_1",
    }
    body = options.json()
    assert {s["name"] for s in body["sources"]} == {"Stripe production", "GitHub CI"}
    assert {d["name"] for d in body["destinations"]} == {"Orders API", "Billing service"}
    assert body["permissions"] == {"read": True, "create": False, "update": False, "delete": False}
    assert foreign.status_code == 404


class LosingAnswers(CountingASGITransport):
    """Delivers writes to the sandbox but loses the next ``lose`` answers, as a timeout would."""

    def __init__(self, app: Starlette) -> None:
        super().__init__(app)
        self.lose = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if self.lose and request.method == "POST":
            self.lose -= 1
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


async def test_a_create_whose_answer_was_lost_is_retried_with_the_key_and_happens_once(
    sandbox_app: Starlette,
) -> None:
    transport = LosingAnswers(sandbox_app)
    transport.lose = 3  # every attempt of the gateway's own retries: the caller sees a 504
    async with running_bff(transport, principal=ALICE) as client:
        lost = await client.post(FLOWS, json=BODY)
        assert lost.status_code == 504, lost.text
        key = lost.headers["idempotency-key"]
        assert key.startswith("bff-")
        posts = [r for r in transport.requests if r.method == "POST"]
        assert {r.headers["idempotency-key"] for r in posts} == {key}

        retried = await client.post(FLOWS, json=BODY, headers={"Idempotency-Key": key})
        assert retried.status_code == 201, retried.text
        assert retried.headers["idempotency-key"] == key
        listed = (await client.get(FLOWS)).json()["items"]
    assert [flow["id"] for flow in listed] == [retried.json()["id"]], "created once"


async def test_every_write_answer_names_its_idempotency_key(over_sandbox: tuple[Over, Any]) -> None:
    connect, _ = over_sandbox
    async with connect() as client:
        created = await client.post(FLOWS, json=BODY, headers={"Idempotency-Key": "mine-1"})
        assert created.headers["idempotency-key"] == "mine-1"
        location = created.headers["location"]
        updated = await client.put(location, json={**BODY, "name": "renamed"})
        deleted = await client.delete(location)
        read = await client.get(FLOWS)
    assert updated.status_code == 200 and updated.headers["idempotency-key"].startswith("bff-")
    assert deleted.status_code == 204 and deleted.headers["idempotency-key"].startswith("bff-")
    assert "idempotency-key" not in read.headers
