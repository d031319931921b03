"""Signing in at a certified provider: PKCE, both credential modes, denied consent, no userinfo.

The provider is panva's ``oidc-provider`` with its own sign-in and consent pages, which the test
fills in as a user would. A sign-in that works must end with a session that reaches the backend;
one that does not must leave no session behind and say so with a 4xx, never a 503.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
import pytest

from bff.paths import CALLBACK_PATH
from tests.interop.browser import Browser
from tests.interop.stack import (
    API_RESOURCE,
    CLIENT_ID,
    CLUSTER,
    DESTINATION,
    SOURCE,
    TENANT,
    Credential,
    ProviderOptions,
    Stacks,
)

pytestmark = [pytest.mark.interop, pytest.mark.e2e]

FLOWS = f"/tenants/{TENANT}/clusters/{CLUSTER}/delivery-flows"
PROBLEMS = "https://api.zen-mesh.io/errors/"
S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


def assert_no_session(browser: Browser) -> None:
    assert browser.session_cookie() is None, "a failed sign-in left a session cookie"
    whoami = browser.api("GET", "/auth/session")
    assert whoami.status_code == 401, whoami.text


def assert_login_failed(response: httpx.Response, reason: str | None = None) -> None:
    """A 4xx from the callback, as problem+json or (for a navigation) a page; never a 503."""
    assert response.url.path == CALLBACK_PATH, response.url
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        problem: dict[str, Any] = response.json()
        assert problem["type"] == PROBLEMS + "login-failed", problem
        assert reason is None or reason in problem["detail"], problem


@pytest.mark.parametrize("credential", ["relay", "internal-jwt"])
def test_a_user_signs_in_with_pkce_and_manages_flows(
    stacks: Stacks, http: httpx.Client, credential: Credential
) -> None:
    stack = stacks.get(credential)
    browser = Browser(http, stack.gateway_url)

    start = browser.start_sign_in("/")
    request = dict(start.authorization_request.params)
    assert start.authorization_request.path == "/auth", start.authorization_request
    assert request["code_challenge_method"] == "S256"
    assert S256_CHALLENGE.fullmatch(request["code_challenge"]), request
    assert request["response_type"] == "code"
    assert request["client_id"] == CLIENT_ID
    assert request["redirect_uri"] == stack.callback_url
    assert {"openid", "offline_access"} <= set(request["scope"].split())
    assert request["prompt"] == "consent"
    assert request.get("resource") == (API_RESOURCE if credential == "relay" else None)

    final = browser.consent(browser.log_in(start.page, "alice"))
    assert str(final.url) == f"{stack.gateway_url}/", (final.status_code, stack.outputs())
    assert final.status_code == 200
    assert browser.session_cookie(), stack.outputs()

    whoami = browser.api("GET", "/auth/session")
    assert whoami.status_code == 200, whoami.text
    me = whoami.json()
    assert me["user"] == {"sub": "alice", "name": "Alice Admin", "email": "alice@acme.example"}
    assert [tenant["id"] for tenant in me["tenants"]] == [TENANT]
    assert me["tenants"][0]["scopes"] == ["read:delivery-flows", "write:delivery-flows"]
    assert me["refreshable"] is True

    listed = browser.api("GET", FLOWS)
    assert listed.status_code == 200, (listed.text, stack.outputs())
    assert isinstance(listed.json()["items"], list)

    name = f"interop-{credential}-{secrets.token_hex(4)}"
    created = browser.api(
        "POST", FLOWS, json={"name": name, "sourceId": SOURCE, "destinationId": DESTINATION}
    )
    assert created.status_code == 201, (created.text, stack.outputs())
    assert created.json()["name"] == name
    assert created.json()["source"] == {"id": SOURCE, "name": "Stripe production"}
    names = [flow["name"] for flow in browser.api("GET", FLOWS).json()["items"]]
    assert name in names


def test_a_user_who_denies_consent_gets_no_session(stacks: Stacks, http: httpx.Client) -> None:
    stack = stacks.get("internal-jwt")
    browser = Browser(http, stack.gateway_url)

    consent_page = browser.log_in(browser.start_sign_in("/").page, "alice")
    answer = browser.go(consent_page.link("[ Cancel ]"))

    assert answer.url.params.get("error") == "access_denied", answer.url
    assert_login_failed(answer, "access_denied")
    assert_no_session(browser)


def test_a_userinfo_refusal_is_a_failed_sign_in_not_an_outage(
    stacks: Stacks, http: httpx.Client
) -> None:
    # In internal-jwt mode the access token is the provider's userinfo token, so the ID token
    # carries no profile claims (the provider's default) and the gateway must ask userinfo.
    stack = stacks.get("internal-jwt", ProviderOptions(refuse_userinfo=True))
    browser = Browser(http, stack.gateway_url)
    refused_before = len(stack.provider_events("userinfo.refused"))

    start = browser.start_sign_in("/")
    answer = browser.consent(browser.log_in(start.page, "alice"))

    assert len(stack.provider_events("userinfo.refused")) == refused_before + 1, stack.outputs()
    assert answer.status_code != 503
    assert_login_failed(answer)
    assert_no_session(browser)
