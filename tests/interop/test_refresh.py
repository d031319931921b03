"""Sessions outlive their access tokens: the gateway refreshes them at the provider, in time.

The provider issues five-second access tokens for the API, and the gateway relays them upstream
(credential mode ``relay``). The tests wait out a token's lifetime, then make a change through
the gateway; the provider's own record of the refresh grants it answered shows what the gateway
asked for, and with rotation on, that it spent each refresh token once.
"""

from __future__ import annotations

import secrets
import time

import httpx
import pytest

from tests.interop.browser import Browser
from tests.interop.stack import CLUSTER, DESTINATION, SOURCE, TENANT, ProviderOptions, Stack, Stacks

pytestmark = [pytest.mark.interop, pytest.mark.e2e]

FLOWS = f"/tenants/{TENANT}/clusters/{CLUSTER}/delivery-flows"
ACCESS_TOKEN_TTL = 5
PAST_EXPIRY = 0.5
"""Seconds past a token's lifetime the tests wait, so that it has certainly expired."""


def wait_until_expired(issued_before: float) -> None:
    """Wait out a token issued before the monotonic time ``issued_before``."""
    remaining = issued_before + ACCESS_TOKEN_TTL + PAST_EXPIRY - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)  # the access token's lifetime, which cannot be shortened


def create_flow(browser: Browser, stack: Stack) -> None:
    """A change through the gateway: it always reaches the backend, with a relayed token."""
    created = browser.api(
        "POST",
        FLOWS,
        json={
            "name": f"interop-refresh-{secrets.token_hex(4)}",
            "sourceId": SOURCE,
            "destinationId": DESTINATION,
        },
    )
    assert created.status_code == 201, (created.text, stack.outputs())


def test_a_session_outlives_its_access_token(stacks: Stacks, http: httpx.Client) -> None:
    stack = stacks.get("relay", ProviderOptions(access_token_ttl=ACCESS_TOKEN_TTL))
    browser = Browser(http, stack.gateway_url)
    browser.sign_in()
    signed_in = time.monotonic()
    earlier = len(stack.refreshes())

    create_flow(browser, stack)
    assert stack.refreshes()[earlier:] == [], "a fresh access token was refreshed"

    wait_until_expired(signed_in)
    create_flow(browser, stack)

    refreshes = stack.refreshes()[earlier:]
    assert refreshes == [
        {"event": "grant.success", "grantType": "refresh_token", "rotated": False}
    ], stack.outputs()
    whoami = browser.api("GET", "/auth/session")
    assert whoami.status_code == 200, whoami.text
    assert whoami.json()["refreshable"] is True


def test_rotated_refresh_tokens_are_kept_and_spent_once(stacks: Stacks, http: httpx.Client) -> None:
    stack = stacks.get(
        "relay",
        ProviderOptions(access_token_ttl=ACCESS_TOKEN_TTL, rotate_refresh_tokens=True),
    )
    browser = Browser(http, stack.gateway_url)
    browser.sign_in()
    issued_before = time.monotonic()
    earlier = len(stack.refreshes())

    for _ in range(2):
        wait_until_expired(issued_before)
        create_flow(browser, stack)
        issued_before = time.monotonic()

    # A refresh token sent twice is refused (invalid_grant) and ends the provider's grant: had
    # the gateway kept the first one, the second refresh would have failed and the session too.
    refreshes = stack.refreshes()[earlier:]
    assert refreshes == 2 * [
        {"event": "grant.success", "grantType": "refresh_token", "rotated": True}
    ], stack.outputs()
    whoami = browser.api("GET", "/auth/session")
    assert whoami.status_code == 200, whoami.text
    assert whoami.json()["refreshable"] is True
