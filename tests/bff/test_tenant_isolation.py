"""Tenant isolation: alice, bob and carol against both tenants and every operation.

alice may read and write ten_acme, bob may only read it, carol may read and write ten_globex.
A denied call is decided by the BFF alone: it never reaches the upstream.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import respx

from tests.support.gateway import API, assert_problem, upstream_flow
from tests.support.provider import USERS
from tests.support.signin import running_app

CLUSTER = {"ten_acme": "plane_dev_us_east_1", "ten_globex": "plane_globex_main"}
SOURCE = {"ten_acme": "ing_stripe_prod", "ten_globex": "ing_globex_orders"}
DESTINATION = {"ten_acme": "dest_orders_api", "ten_globex": "dest_globex_erp"}

# operation → (method, path below the tenant, success status, needs write)
OPERATIONS: dict[str, tuple[str, str, int, bool]] = {
    "list": ("GET", "/clusters/{cid}/delivery-flows", 200, False),
    "get": ("GET", "/clusters/{cid}/delivery-flows/flow_1", 200, False),
    "create": ("POST", "/clusters/{cid}/delivery-flows", 201, True),
    "update": ("PUT", "/clusters/{cid}/delivery-flows/flow_1", 200, True),
    "delete": ("DELETE", "/clusters/{cid}/delivery-flows/flow_1", 204, True),
    "clusters": ("GET", "/clusters", 200, False),
    "options": ("GET", "/clusters/{cid}/delivery-flow-options", 200, False),
}


def expected(user: str, tenant: str, operation: str) -> tuple[int, str | None]:
    scopes = USERS[user].tenants.get(tenant)
    if scopes is None:
        return 403, "tenant-forbidden"
    if OPERATIONS[operation][3] and "write:delivery-flows" not in scopes:
        return 403, "insufficient-scope"
    return OPERATIONS[operation][2], None


def tenant_flow(tenant: str, **kw: Any) -> dict[str, Any]:
    return {
        **upstream_flow(
            cluster_id=CLUSTER[tenant],
            source_id=SOURCE[tenant],
            destination_id=DESTINATION[tenant],
            **kw,
        ),
        "tenant_id": tenant,
    }


@pytest.fixture
def backend(upstream: respx.MockRouter) -> respx.MockRouter:
    """Both tenants' data upstream (ten_acme's clusters and endpoints come from conftest)."""
    base = "/v1/tenants/ten_globex"
    upstream.get(f"{base}/clusters").respond(
        json={
            "clusters": [
                {
                    "id": "plane_globex_main",
                    "name": "Globex main",
                    "region": "us-west-2",
                    "status": "active",
                }
            ],
            "next_cursor": None,
        }
    )
    upstream.get(f"{base}/ingesters").respond(
        json={
            "ingesters": [
                {
                    "id": "ing_globex_orders",
                    "name": "Globex orders",
                    "type": "http",
                    "cluster_id": "plane_globex_main",
                }
            ],
            "next_cursor": None,
        }
    )
    upstream.get(f"{base}/destinations").respond(
        json={
            "destinations": [
                {
                    "id": "dest_globex_erp",
                    "name": "Globex ERP",
                    "url": "https://erp.globex.example/webhooks",
                    "cluster_id": "plane_globex_main",
                }
            ],
            "next_cursor": None,
        }
    )
    for tenant in CLUSTER:
        flows = f"/v1/tenants/{tenant}/delivery-flows"
        flow = tenant_flow(tenant)
        upstream.get(flows).respond(json={"delivery_flows": [flow], "next_cursor": None})
        upstream.post(flows).respond(201, json=flow, headers={"ETag": '"1"'})
        upstream.get(f"{flows}/flow_1").respond(json=flow, headers={"ETag": '"1"'})
        upstream.put(f"{flows}/flow_1").respond(
            json=tenant_flow(tenant, version=2), headers={"ETag": '"2"'}
        )
        upstream.delete(f"{flows}/flow_1").respond(204)
    return upstream


async def call(browser: Any, tenant: str, operation: str) -> Any:
    method, path, _, _ = OPERATIONS[operation]
    url = f"{API}/tenants/{tenant}" + path.format(cid=CLUSTER[tenant])
    body = None
    if method in {"POST", "PUT"}:
        body = json.dumps(
            {"name": "a-flow", "sourceId": SOURCE[tenant], "destinationId": DESTINATION[tenant]}
        )
    headers = {"Content-Type": "application/json"} if body else {}
    return await browser.api(method, url, headers=headers, content=body)


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("tenant", list(CLUSTER))
@pytest.mark.parametrize("user", list(USERS))
async def test_tenant_and_scope_matrix(
    backend: respx.MockRouter, user: str, tenant: str, operation: str
) -> None:
    status, slug = expected(user, tenant, operation)
    async with running_app(backend) as h:
        browser = h.browser_with(await h.insert_session(user))
        response = await call(browser, tenant, operation)

    if slug is None:
        assert response.status_code == status, response.text
        assert backend.calls, "an allowed call reaches the upstream"
        for sent in backend.calls:
            assert sent.request.url.path.startswith(f"/v1/tenants/{tenant}/")
            assert sent.request.headers["authorization"] == f"Bearer {USERS[user].api_key}"
    else:
        body = assert_problem(response, status, slug)
        if slug == "insufficient-scope":
            assert body["required_scope"] == "write:delivery-flows"
        else:
            assert "required_scope" not in body
        assert len(backend.calls) == 0


@pytest.mark.parametrize(
    ("user", "tenant", "operation", "slug"),
    [
        ("alice", "ten_globex", "list", "tenant-forbidden"),
        ("bob", "ten_acme", "create", "insufficient-scope"),
        ("bob", "ten_acme", "delete", "insufficient-scope"),
        ("carol", "ten_acme", "get", "tenant-forbidden"),
    ],
)
async def test_rights_from_a_real_login_are_enforced(
    backend: respx.MockRouter, user: str, tenant: str, operation: str, slug: str
) -> None:
    """The same decisions when the rights come from the provider's zen_tenants claim."""
    async with running_app(backend) as h:
        browser = h.browser()
        await h.login(browser, user)
        denied = await call(browser, tenant, operation)
        assert_problem(denied, 403, slug)
        assert len(backend.calls) == 0
        own_tenant = next(iter(USERS[user].tenants))
        allowed = await call(browser, own_tenant, "list")
        assert allowed.status_code == 200, allowed.text
