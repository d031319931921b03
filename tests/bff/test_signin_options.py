"""What the sign-in asks the provider for: configured and per-sign-in authorization parameters,
silent re-authentication with its fallback, and the RFC 9207 ``iss`` of the answer."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from bff.settings import ConfigError
from tests.support.gateway import LOGIN
from tests.support.provider import ISSUER
from tests.support.signin import auth_settings, running_app


def _params(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def test_offline_access_asks_for_consent_and_configured_parameters_are_sent(
    upstream: respx.MockRouter,
) -> None:
    settings = auth_settings(
        oidc={"extra_authorization_params": {"resource": "https://flows.example/api"}}
    )
    async with running_app(upstream, settings=settings) as h:
        start = await h.browser().get(LOGIN, params={"returnTo": "/"})
    params = _params(start.headers["location"])
    assert "offline_access" in params["scope"].split()
    assert params["prompt"] == "consent"
    assert params["resource"] == "https://flows.example/api"


def _form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


async def test_the_resource_asked_for_at_sign_in_is_named_at_every_token_request(
    upstream: respx.MockRouter,
) -> None:
    # RFC 8707 2.2: a provider may issue the API's access token only to a token request that
    # names the resource again (panva's oidc-provider by default).
    settings = auth_settings(
        oidc={"extra_authorization_params": {"resource": "https://flows.example/api"}}
    )
    async with running_app(upstream, settings=settings) as h:
        h.provider.expires_in = 300
        browser = h.browser()
        await h.login(browser, "alice")
        h.clock.advance(280)
        assert (await browser.api("GET", "/api/bff/v1/auth/session")).status_code == 200
    exchange, refresh = (_form(call.request) for call in h.provider.token.calls)
    assert exchange["grant_type"] == "authorization_code"
    assert refresh["grant_type"] == "refresh_token"
    assert exchange["resource"] == refresh["resource"] == "https://flows.example/api"


async def test_without_a_resource_the_token_requests_name_none(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        await h.login(h.browser(), "alice")
    assert "resource" not in _form(h.provider.token.calls.last.request)


@pytest.mark.parametrize(("configured", "sent"), [("login", "login"), ("", None)])
async def test_a_configured_prompt_replaces_the_default(
    upstream: respx.MockRouter, configured: str, sent: str | None
) -> None:
    async with running_app(upstream, settings=auth_settings(oidc={"prompt": configured})) as h:
        start = await h.browser().get(LOGIN, params={"returnTo": "/"})
    assert _params(start.headers["location"]).get("prompt") == sent


def test_the_protocols_own_parameters_cannot_be_configured() -> None:
    with pytest.raises(ConfigError, match=r"^\[oidc\]\.extra_authorization_params: state "):
        auth_settings(oidc={"extra_authorization_params": {"state": "fixed"}})


async def test_a_sign_in_passes_the_options_a_dashboard_needs(upstream: respx.MockRouter) -> None:
    options = {"prompt": "login", "max_age": "300", "login_hint": "alice@acme.example"}
    async with running_app(upstream) as h:
        start = await h.browser().get(
            LOGIN, params={"returnTo": "/", **options, "acr_values": "urn:mfa"}
        )
    params = _params(start.headers["location"])
    assert {k: params[k] for k in options} == options
    assert params["acr_values"] == "urn:mfa"


@pytest.mark.parametrize(
    ("name", "value"),
    [("prompt", "always"), ("max_age", "-1"), ("login_hint", "a\nb"), ("display", "popup")],
)
async def test_other_sign_in_options_are_400(
    upstream: respx.MockRouter, name: str, value: str
) -> None:
    async with running_app(upstream) as h:
        refused = await h.browser().get(LOGIN, params={"returnTo": "/", name: value})
    assert refused.status_code == 400
    assert [error["field"] for error in refused.json()["errors"]] == [name]


async def test_a_silent_sign_in_that_needs_the_user_falls_back_to_a_sign_in(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        start = await browser.get(LOGIN, params={"returnTo": "/flows", "prompt": "none"})
        params = _params(start.headers["location"])
        assert params["prompt"] == "none"
        answer = f"{params['redirect_uri']}?error=login_required&state={params['state']}"
        fallback = await browser.get(answer)
        # Another pending silent sign-in, answered with someone else's state: refused.
        other = h.browser()
        await other.get(LOGIN, params={"returnTo": "/", "prompt": "none"})
        forged = await other.get(
            f"{params['redirect_uri']}?error=login_required&state={params['state']}"
        )
    assert fallback.status_code == 302
    assert fallback.headers["location"] == f"{LOGIN}?returnTo=%2Fflows"
    assert forged.status_code == 400
    assert "does not match" in forged.json()["detail"]


@pytest.mark.parametrize(
    ("advertised", "iss", "signed_in"),
    [
        (True, ISSUER, True),
        (True, None, False),
        (True, "https://evil.example", False),
        (False, None, True),
        (False, "https://evil.example", False),
    ],
)
async def test_the_issuer_of_the_authorization_response_is_checked(
    upstream: respx.MockRouter, advertised: bool, iss: str | None, signed_in: bool
) -> None:
    async with running_app(upstream) as h:
        h.provider.metadata_extra = {"authorization_response_iss_parameter_supported": advertised}
        browser = h.browser()
        start = await browser.get(LOGIN, params={"returnTo": "/"})
        extra = {"iss": iss} if iss is not None else {}
        callback = await browser.get(
            h.provider.authorize(start.headers["location"], "alice", extra=extra)
        )
    assert (callback.status_code == 302) is signed_in, callback.text


@pytest.mark.parametrize(
    ("advertised", "signed_with", "signed_in"),
    [
        (["PS256"], "PS256", True),
        (["RS256", "PS512"], "PS512", True),
        (None, "RS256", True),  # no list: RS256, as OpenID Connect Discovery says
        (["PS256"], "RS256", False),  # an algorithm the provider does not use
        (None, "PS256", False),
    ],
)
async def test_id_tokens_are_checked_with_the_algorithms_the_provider_names(
    upstream: respx.MockRouter, advertised: list[str] | None, signed_with: str, signed_in: bool
) -> None:
    async with running_app(upstream) as h:
        if advertised is not None:
            h.provider.metadata_extra = {"id_token_signing_alg_values_supported": advertised}
        h.provider.id_token_hook = lambda claims: h.provider.signed(claims, alg=signed_with)
        browser = h.browser()
        start = await browser.get(LOGIN, params={"returnTo": "/"})
        callback = await browser.get(h.provider.authorize(start.headers["location"], "alice"))
    assert (callback.status_code == 302) is signed_in, callback.text


async def test_a_provider_that_only_names_unsafe_algorithms_cannot_sign_anyone_in(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        h.provider.metadata_extra = {"id_token_signing_alg_values_supported": ["none", "HS256"]}
        browser = h.browser()
        start = await browser.get(LOGIN, params={"returnTo": "/"})
        callback = await browser.get(h.provider.authorize(start.headers["location"], "alice"))
    assert callback.status_code == 503
