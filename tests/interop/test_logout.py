"""Signing out, from either side: RP-initiated logout and back-channel logout.

From the gateway: ``POST /auth/logout`` ends the session and hands the dashboard the provider's
end-session URL, which the browser follows through the provider's confirmation to the
post-logout redirect. From the provider: a user who signs out there gets the provider to post a
logout token to the gateway, which ends the session of that provider session and no other.

Both run against the provider as it comes, and in its FAPI 2.0 profile (tokens bound to DPoP
keys, the client proving itself with ``private_key_jwt`` at the revocation too, PS256 logout
tokens) with the gateway's ``profile = "fapi2"``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bff.paths import API_PREFIX
from tests.interop.browser import SESSION_COOKIE, Browser, Page
from tests.interop.stack import CLIENT_ID, FAPI2, ProviderOptions, Stack, Stacks

pytestmark = [pytest.mark.interop, pytest.mark.e2e]

SIGN_OUT = ("logout", "yes")
"""The provider's "Yes, sign me out" button."""


@pytest.fixture(params=[ProviderOptions(), FAPI2], ids=["default", "fapi2"])
def stack(request: pytest.FixtureRequest, stacks: Stacks) -> Stack:
    options: ProviderOptions = request.param
    return stacks.get("internal-jwt", options)


def provider_metadata(stack: Stack, http: httpx.Client) -> dict[str, Any]:
    response = http.get(f"{stack.issuer}/.well-known/openid-configuration")
    assert response.status_code == 200, response.text
    metadata: dict[str, Any] = response.json()
    return metadata


def session_status(stack: Stack, cookie: str) -> int:
    """What the gateway answers ``GET /auth/session`` with this session cookie, from anywhere."""
    with httpx.Client(trust_env=False, timeout=10.0) as other:
        response = other.get(
            f"{stack.gateway_url}{API_PREFIX}/auth/session",
            headers={"X-CSRF": "1", "Cookie": f"{SESSION_COOKIE}={cookie}"},
        )
    return response.status_code


def signed_in(stack: Stack, http: httpx.Client) -> tuple[Browser, str]:
    browser = Browser(http, stack.gateway_url)
    browser.sign_in()
    cookie = browser.session_cookie()
    assert cookie is not None
    assert session_status(stack, cookie) == 200
    return browser, cookie


def test_sign_out_ends_the_session_here_and_at_the_provider(
    stack: Stack, http: httpx.Client
) -> None:
    metadata = provider_metadata(stack, http)
    browser, cookie = signed_in(stack, http)
    earlier = len(stack.provider_events())

    logout = browser.api("POST", "/auth/logout")
    assert logout.status_code == 200, logout.text
    assert browser.session_cookie() is None, "the session cookie was not cleared"
    assert session_status(stack, cookie) == 401
    # The refresh token was revoked at the provider, and with it the grant (its default); with
    # private_key_jwt the revocation carried an assertion, which the provider took.
    records = [
        record
        for record in stack.provider_events()[earlier:]
        if not (record["event"] == "client_assertion" and record["status"] == 200)
    ]
    assert records == [{"event": "grant.revoked", "route": "revocation"}], stack.outputs()

    end_session = httpx.URL(logout.json()["endSessionUrl"])
    assert str(end_session.copy_with(query=None)) == metadata["end_session_endpoint"]
    assert dict(end_session.params) == {
        "client_id": CLIENT_ID,
        "post_logout_redirect_uri": stack.post_logout_redirect,
    }

    confirmation = Page(browser.go(end_session))
    final = browser.submit(confirmation.form_with("xsrf"), press=SIGN_OUT)
    assert str(final.url) == stack.post_logout_redirect, (final.url, stack.outputs())
    assert final.status_code == 200

    # The provider's session is over too: signing in again asks who the user is.
    again = browser.start_sign_in()
    again.page.form_with("prompt", "login")


def test_a_sign_out_at_the_provider_ends_the_gateway_session(
    stack: Stack, http: httpx.Client
) -> None:
    metadata = provider_metadata(stack, http)
    with httpx.Client(trust_env=False, timeout=10.0) as elsewhere:
        _, other_cookie = signed_in(stack, elsewhere)
    browser, cookie = signed_in(stack, http)
    delivered = len(stack.provider_events("backchannel.success"))
    failed = len(stack.provider_events("backchannel.error"))

    # The user signs out on the provider's own page, not through the gateway.
    confirmation = Page(browser.go(metadata["end_session_endpoint"]))
    final = browser.submit(confirmation.form_with("xsrf"), press=SIGN_OUT)
    assert final.status_code == 200, final.text

    # The provider answers only once it has delivered the logout token.
    assert stack.provider_events("backchannel.error")[failed:] == [], stack.outputs()
    deliveries = stack.provider_events("backchannel.success")[delivered:]
    assert [(each["clientId"], each["sub"]) for each in deliveries] == [(CLIENT_ID, "alice")]

    assert session_status(stack, cookie) == 401, stack.outputs()
    refused = browser.api("GET", "/auth/session")
    assert refused.status_code == 401, refused.text
    # Another browser of the same user has a provider session of its own: it stays signed in.
    assert session_status(stack, other_cookie) == 200
