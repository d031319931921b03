"""The dashboard's whole journey through ``bff dev``: sign in, manage flows, sign out.

The sandbox, the development provider and the BFF run as real processes on free loopback ports;
the test is the browser: it follows the redirects, submits the provider's form, and calls the API
with the session cookie, ``X-CSRF: 1`` and the dashboard's ``Origin``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.dev_stack import running_dev_stack
from tests.support.oidc_login import browser_login
from tests.support.processes import ServerProcess

pytestmark = pytest.mark.e2e

ERRORS = "https://api.zen-mesh.io/errors/"
ACME_FLOWS = "/api/bff/v1/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flows"
GLOBEX_FLOWS = "/api/bff/v1/tenants/ten_globex/clusters/plane_globex_main/delivery-flows"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_dev_stack(tmp_path) as running:
        yield running


class Dashboard:
    """What the dashboard's script does in one signed-in browser."""

    def __init__(self, stack: ServerProcess, client: httpx.Client) -> None:
        self.stack = stack
        self.client = client

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-CSRF": "1", **kwargs.pop("headers", {})}
        if method not in {"GET", "HEAD"}:
            headers["Origin"] = self.stack.url
        return self.client.request(method, f"{self.stack.url}{path}", headers=headers, **kwargs)


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        yield client


def sign_in(stack: ServerProcess, client: httpx.Client, user: str) -> Dashboard:
    final = browser_login(client, stack.url, user, return_to="/")
    assert str(final.url) == f"{stack.url}/", stack.output()
    assert client.cookies.get("bff_session"), "the callback set no session cookie"
    return Dashboard(stack, client)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == ERRORS + slug
    return body


def test_alice_manages_a_flow_and_signs_out(stack: ServerProcess, browser: httpx.Client) -> None:
    alice = sign_in(stack, browser, "alice")
    session_cookie = browser.cookies["bff_session"]
    me = alice.call("GET", "/api/bff/v1/auth/session")
    assert me.status_code == 200, me.text
    assert me.json()["user"]["name"] == "Alice Admin"

    listed = alice.call("GET", ACME_FLOWS)
    assert listed.status_code == 200, listed.text
    assert isinstance(listed.json()["items"], list)

    name = f"e2e-{secrets.token_hex(4)}"
    created = alice.call(
        "POST",
        ACME_FLOWS,
        json={"name": name, "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"},
    )
    assert created.status_code == 201, created.text
    flow = created.json()
    assert flow["source"] == {"id": "ing_stripe_prod", "name": "Stripe production"}
    location = created.headers["location"]
    assert location == f"{ACME_FLOWS}/{flow['id']}"
    first_etag = created.headers["etag"]
    assert name in [item["name"] for item in alice.call("GET", ACME_FLOWS).json()["items"]]

    updated = alice.call(
        "PUT",
        location,
        headers={"If-Match": first_etag},
        json={
            "name": f"{name}-renamed",
            "sourceId": "ing_github_ci",
            "destinationId": "dest_billing_svc",
            "retryPolicy": {"maxAttempts": 5, "backoffSeconds": 30},
        },
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["name"] == f"{name}-renamed"
    assert updated.json()["retryPolicy"] == {"maxAttempts": 5, "backoffSeconds": 30}
    assert updated.headers["etag"] != first_etag
    lost_update = alice.call(
        "PUT",
        location,
        headers={"If-Match": first_etag},
        json={"name": name, "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"},
    )
    assert_problem(lost_update, 412, "precondition-failed")

    deleted = alice.call("DELETE", location, headers={"If-Match": updated.headers["etag"]})
    assert deleted.status_code == 204, deleted.text
    assert_problem(alice.call("GET", location), 404, "not-found")
    names = [item["name"] for item in alice.call("GET", ACME_FLOWS).json()["items"]]
    assert f"{name}-renamed" not in names

    logout = alice.call("POST", "/api/bff/v1/auth/logout")
    assert logout.status_code == 200, logout.text
    assert logout.json()["endSessionUrl"].startswith("http://127.0.0.1:")
    assert "bff_session" not in browser.cookies

    with httpx.Client(trust_env=False, timeout=10.0) as replay:
        response = replay.get(
            f"{stack.url}{ACME_FLOWS}",
            headers={"X-CSRF": "1", "Cookie": f"bff_session={session_cookie}"},
        )
    assert_problem(response, 401, "session-expired")

    assert stack.stop() == 0, stack.output()


def test_bob_reads_and_carol_stays_in_her_tenant(stack: ServerProcess) -> None:
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        bob = sign_in(stack, client, "bob")
        assert bob.call("GET", ACME_FLOWS).status_code == 200
        write = {"name": "nope", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"}
        refused = bob.call("POST", ACME_FLOWS, json=write)
        body = assert_problem(refused, 403, "insufficient-scope")
        assert body["required_scope"] == "write:delivery-flows"

    with httpx.Client(trust_env=False, timeout=10.0) as client:
        carol = sign_in(stack, client, "carol")
        assert_problem(carol.call("GET", ACME_FLOWS), 403, "tenant-forbidden")
        own = carol.call("GET", GLOBEX_FLOWS)
        assert own.status_code == 200, own.text

    assert stack.stop() == 0, stack.output()
