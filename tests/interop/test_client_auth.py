"""The gateway proves itself without a shared secret, and pushes its sign-in requests, at a
certified provider: ``private_key_jwt`` and PAR.

The provider (panva's ``oidc-provider``) registers the gateway's client with
``token_endpoint_auth_method: private_key_jwt`` and the gateway's client JWKS as ``jwks_uri``,
which it fetches itself; the key was made by ``bff keys``. Every call that authenticates the
client carries a fresh assertion: the code exchange, the refresh, the revocation at sign-out.
"""

from __future__ import annotations

import secrets
import time

import httpx
import pytest

from tests.interop.browser import Browser
from tests.interop.stack import CLUSTER, DESTINATION, SOURCE, TENANT, ProviderOptions, Stacks

pytestmark = [pytest.mark.interop, pytest.mark.e2e]

FLOWS = f"/tenants/{TENANT}/clusters/{CLUSTER}/delivery-flows"


def test_private_key_jwt_and_par_sign_in_refresh_and_sign_out(
    stacks: Stacks, http: httpx.Client
) -> None:
    stack = stacks.get(
        "internal-jwt",
        ProviderOptions(
            client_auth="private_key_jwt", access_token_ttl=5, require_par=True, par="auto"
        ),
    )
    browser = Browser(http, stack.gateway_url)
    start = browser.start_sign_in("/")
    assert set(start.authorization_request.params) == {"client_id", "request_uri"}
    browser.consent(browser.log_in(start.page, "alice"))
    assert browser.session_cookie(), stack.outputs()
    name = f"interop-pkjwt-{secrets.token_hex(4)}"
    created = browser.api(
        "POST", FLOWS, json={"name": name, "sourceId": SOURCE, "destinationId": DESTINATION}
    )
    assert created.status_code == 201, (created.text, stack.outputs())

    time.sleep(5)  # the access token expires: the next call refreshes it
    assert browser.api("GET", FLOWS).status_code == 200, stack.outputs()
    assert browser.api("POST", "/auth/logout").status_code == 200

    grants = [e["grantType"] for e in stack.provider_events("grant.success")]
    assert grants[:2] == ["authorization_code", "refresh_token"], stack.outputs()
    assert not stack.provider_events("grant.error"), stack.outputs()
    assert not stack.provider_events("revocation.error"), stack.outputs()
    assert stack.provider_events("grant.revoked"), "the revocation was accepted"


def test_a_provider_that_requires_par_meets_par_never_with_a_clear_page(
    stacks: Stacks, http: httpx.Client
) -> None:
    stack = stacks.get("internal-jwt", ProviderOptions(require_par=True))
    page = http.get(
        f"{stack.gateway_url}/api/bff/v1/auth/login",
        headers={"Sec-Fetch-Mode": "navigate", "Accept": "text/html"},
    )
    assert page.status_code == 400, (page.status_code, stack.outputs())
    assert "requires pushed authorization requests" in page.text
    assert page.headers["content-type"].startswith("text/html")
