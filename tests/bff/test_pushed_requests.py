"""Pushed authorization requests (RFC 9126), ``[oidc].par``: the sign-in's parameters go to the
provider over the back channel, and the browser carries only ``client_id`` and ``request_uri``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import respx

from tests.support.clock import FakeClock
from tests.support.gateway import LOGIN
from tests.support.provider import CLIENT_ID, ISSUER, FakeProvider
from tests.support.signin import auth_settings, running_app

NAVIGATION = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
PAR_ENDPOINT = {"pushed_authorization_request_endpoint": f"{ISSUER}/par"}


def _provider(**metadata: Any) -> FakeProvider:
    provider = FakeProvider(FakeClock())
    provider.metadata_extra = metadata
    return provider


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def test_auto_pushes_when_offered_and_the_browser_carries_a_reference(
    upstream: respx.MockRouter,
) -> None:
    provider = _provider(**PAR_ENDPOINT)
    settings = auth_settings(oidc={"par": "auto"})
    async with running_app(upstream, settings=settings, provider=provider) as harness:
        browser = harness.browser()
        start = await browser.get(LOGIN, params={"returnTo": "/flows"})
        carried = _query(start.headers["location"])
        (pushed,) = provider.pushed.values()
        raw_id = await harness.login(harness.browser(), "alice", return_to="/flows")
    assert set(carried) == {"client_id", "request_uri"} and carried["client_id"] == CLIENT_ID
    assert pushed["code_challenge_method"] == "S256" and pushed["response_type"] == "code"
    assert {"state", "nonce", "code_challenge", "redirect_uri", "scope"} <= set(pushed)
    assert "client_secret" not in pushed, "the secret went in the Authorization header"
    assert raw_id


async def test_auto_without_an_endpoint_and_never_send_the_parameters_in_the_url(
    upstream: respx.MockRouter,
) -> None:
    for par, provider in (("auto", _provider()), ("never", _provider(**PAR_ENDPOINT))):
        settings = auth_settings(oidc={"par": par})
        async with running_app(upstream, settings=settings, provider=provider) as harness:
            start = await harness.browser().get(LOGIN)
        assert "code_challenge" in _query(start.headers["location"]), par
        assert provider.par.call_count == 0, par


@pytest.mark.parametrize(
    ("par", "metadata", "refusal", "says"),
    [
        (
            "auto",
            PAR_ENDPOINT,
            {"error": "invalid_request", "error_description": "redirect_uri not registered"},
            "invalid_request: redirect_uri not registered",
        ),
        (
            "never",
            {**PAR_ENDPOINT, "require_pushed_authorization_requests": True},
            None,
            "requires pushed authorization requests",
        ),
        ("always", {}, None, "offers no pushed authorization requests"),
    ],
    ids=["refused", "required-but-never", "always-but-not-offered"],
)
async def test_a_sign_in_the_provider_will_not_take_shows_the_failure_page_with_its_reason(
    upstream: respx.MockRouter,
    par: str,
    metadata: dict[str, Any],
    refusal: dict[str, str] | None,
    says: str,
) -> None:
    provider = _provider(**metadata)
    provider.par_error = refusal
    settings = auth_settings(oidc={"par": par})
    async with running_app(upstream, settings=settings, provider=provider) as harness:
        page = await harness.browser().get(LOGIN, headers=NAVIGATION)
        script = await harness.browser().get(LOGIN)
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert says in page.text
    assert script.status_code == 400
    assert script.json()["type"].endswith("/login-failed") and says in script.json()["detail"]
