"""A provider that signs with RSASSA-PSS (PS256): ID tokens for the gateway, access tokens for the
backend.

The provider names PS256 as its only ID token algorithm and its one key is a PS256 key, so a
sign-in proves the gateway verifies PSS signatures; in credential mode ``relay`` the backend then
verifies the provider's PS256 access tokens that the gateway forwards.
"""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.interop.browser import Browser
from tests.interop.stack import CLUSTER, DESTINATION, SOURCE, TENANT, ProviderOptions, Stacks

pytestmark = [pytest.mark.interop, pytest.mark.e2e]

FLOWS = f"/tenants/{TENANT}/clusters/{CLUSTER}/delivery-flows"


def test_sign_in_and_calls_work_with_a_ps256_provider(stacks: Stacks, http: httpx.Client) -> None:
    stack = stacks.get("relay", ProviderOptions(alg="PS256"))
    metadata = http.get(f"{stack.issuer}/.well-known/openid-configuration").json()
    assert metadata["id_token_signing_alg_values_supported"] == ["PS256"]
    keys = http.get(metadata["jwks_uri"]).json()["keys"]
    assert [key["alg"] for key in keys] == ["PS256"]

    browser = Browser(http, stack.gateway_url)
    browser.sign_in()
    whoami = browser.api("GET", "/auth/session")
    assert whoami.status_code == 200, (whoami.text, stack.outputs())
    assert whoami.json()["user"]["sub"] == "alice"

    name = f"interop-ps256-{secrets.token_hex(4)}"
    created = browser.api(
        "POST", FLOWS, json={"name": name, "sourceId": SOURCE, "destinationId": DESTINATION}
    )
    assert created.status_code == 201, (created.text, stack.outputs())
    listed = browser.api("GET", FLOWS)
    assert listed.status_code == 200, listed.text
    assert name in [flow["name"] for flow in listed.json()["items"]]
