"""Sign-in: the authorization request, the callback's defences, the cookies, session fixation.

Attack cases run against a fake provider (respx) whose answers the test controls; the protocol
itself is proven against the real development provider running as a process on loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import respx

from tests.support.clock import FakeClock
from tests.support.cookies import Browser, set_cookies
from tests.support.dev_provider import real_login, start_dev_provider
from tests.support.gateway import CALLBACK, CALLBACK_URL, LOGIN, WHOAMI, assert_problem
from tests.support.oidc_login import find_login_form
from tests.support.provider import CLIENT_ID, ISSUER, AuthorizeRequest, attacker_key
from tests.support.signin import ABSOLUTE_TIMEOUT, Harness, auth_settings, running_app
from tests.support.tokens import b64, b64json, sign, unsigned

SESSION = "bff_session"
LOGIN_COOKIE = "bff_login"


@pytest.fixture(scope="module")
def dev_issuer() -> Iterator[str]:
    with start_dev_provider() as issuer:
        yield issuer


def no_session_cookie(response: httpx.Response, name: str = SESSION) -> bool:
    return all(c.deleted for c in set_cookies(response) if c.name == name)


# --- the authorization request -------------------------------------------------------------------


async def test_login_redirects_to_the_provider_with_pkce_s256_state_and_nonce(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        first = await h.browser().get(LOGIN, params={"returnTo": "/flows"})
        second = await h.browser().get(LOGIN, params={"returnTo": "/flows"})

    assert first.status_code == 302
    assert first.headers["location"].startswith(f"{ISSUER}/authorize?")
    params = AuthorizeRequest.from_location(first.headers["location"]).params
    assert params["response_type"] == "code"
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == CALLBACK_URL
    assert "openid" in params["scope"].split()
    assert params["code_challenge_method"] == "S256"
    # An S256 challenge is a base64url SHA-256: 43 characters, never the verifier itself.
    assert len(params["code_challenge"]) == 43
    assert "code_verifier" not in params
    assert len(params["state"]) >= 22
    assert len(params["nonce"]) >= 22
    other = AuthorizeRequest.from_location(second.headers["location"]).params
    for name in ("state", "nonce", "code_challenge"):
        assert params[name] != other[name], name
    # The browser holds only a handle: state, nonce and verifier stay on the server.
    login_cookie = next(c for c in set_cookies(first) if c.name == LOGIN_COOKIE)
    for name in ("state", "nonce", "code_challenge"):
        assert params[name] not in login_cookie.value


async def test_login_cookie_is_httponly_lax_and_short_lived(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        response = await h.browser().get(LOGIN, params={"returnTo": "/"})
    cookies = set_cookies(response)
    assert [c.name for c in cookies] == [LOGIN_COOKIE]
    assert {k: v.lower() for k, v in cookies[0].attributes.items()} == {
        "httponly": "",
        "max-age": "600",
        "path": "/",
        "samesite": "lax",
    }


async def test_a_completed_login_returns_to_the_local_path_it_was_given(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        await h.login(browser, "alice", return_to="/flows?tab=recent")
        whoami = await browser.api("GET", WHOAMI)
    assert whoami.status_code == 200, whoami.text
    assert whoami.json()["user"]["sub"] == "alice"


@pytest.mark.parametrize(
    "return_to",
    [
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "\\/evil",
        "http:/x",
        "javascript:alert(1)",
        "/flows\r\nSet-Cookie: planted=1",
        "/" + "a" * 3000,
    ],
    ids=["absolute", "scheme-relative", "slash-backslash", "backslash-slash", "http-colon-path",
         "javascript", "crlf", "very-long"],
)  # fmt: skip
async def test_return_to_must_be_a_local_path(upstream: respx.MockRouter, return_to: str) -> None:
    async with running_app(upstream) as h:
        response = await h.browser().get(LOGIN, params={"returnTo": return_to})
        discovery_calls = h.provider.discovery.call_count
    body = assert_problem(response, 400, "validation-error")
    assert body["errors"][0]["field"] == "returnTo"
    assert set_cookies(response) == []
    assert discovery_calls == 0


# --- the callback's defences ---------------------------------------------------------------------


async def start(h: Harness, browser: Browser) -> str:
    """Start a login in ``browser``; returns the URL of the provider's login page."""
    response = await browser.get(LOGIN, params={"returnTo": "/"})
    assert response.status_code == 302
    return str(response.headers["location"])


async def assert_login_failed(h: Harness, browser: Browser, response: httpx.Response) -> None:
    assert_problem(response, 400, "login-failed")
    assert no_session_cookie(response)
    assert h.cookie_name not in browser.cookies
    # And no session came to life behind the scenes: the browser is still signed out.
    assert (await browser.api("GET", WHOAMI)).status_code == 401


def tampered(h: Harness, claims: dict[str, Any]) -> str:
    token = h.provider.signed(claims)
    header, _, signature = token.split(".")
    return f"{header}.{b64json({**claims, 'sub': 'bob'})}.{signature}"


def hs256_with_public_key(h: Harness, claims: dict[str, Any]) -> str:
    public_pem = h.provider.key.as_pem(private=False)
    signing_input = f"{b64json({'alg': 'HS256', 'kid': h.provider.key.kid})}.{b64json(claims)}"
    return f"{signing_input}.{b64(hmac.digest(public_pem, signing_input.encode(), 'sha256'))}"


ID_TOKEN_ATTACKS: dict[str, Any] = {
    "wrong-nonce": lambda h, c: h.provider.signed({**c, "nonce": "someone-elses-nonce"}),
    "no-nonce": lambda h, c: h.provider.signed({k: v for k, v in c.items() if k != "nonce"}),
    "wrong-iss": lambda h, c: h.provider.signed({**c, "iss": "http://evil.test"}),
    "wrong-aud": lambda h, c: h.provider.signed({**c, "aud": "another-client"}),
    "expired": lambda h, c: h.provider.signed(
        {**c, "iat": int(h.clock()) - 7200, "exp": int(h.clock()) - 3600}
    ),
    "alg-none": lambda h, c: unsigned({"alg": "none"}, c),
    "unsigned": lambda h, c: unsigned({"alg": "RS256", "kid": h.provider.key.kid}, c),
    "foreign-key": lambda h, c: sign(c, attacker_key()),
    "hs256-with-public-key": hs256_with_public_key,
    "tampered-payload": tampered,
}


@pytest.mark.parametrize("attack", list(ID_TOKEN_ATTACKS))
async def test_an_id_token_that_is_not_valid_for_this_login_fails_it(
    upstream: respx.MockRouter, attack: str
) -> None:
    async with running_app(upstream) as h:
        h.provider.id_token_hook = lambda claims: ID_TOKEN_ATTACKS[attack](h, claims)
        browser = h.browser()
        response = await browser.get(h.provider.authorize(await start(h, browser)))
        await assert_login_failed(h, browser, response)
        assert h.provider.token.call_count == 1


async def test_callback_without_the_login_cookie_fails(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        callback = h.provider.authorize(await start(h, browser))
        browser.cookies.clear()
        response = await browser.get(callback)
        await assert_login_failed(h, browser, response)
        assert h.provider.token.call_count == 0


@pytest.mark.parametrize(
    "state", [None, "", "not-the-state-we-sent"], ids=["missing", "empty", "wrong"]
)
async def test_callback_with_a_missing_or_wrong_state_fails(
    upstream: respx.MockRouter, state: str | None
) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        callback = h.provider.authorize(await start(h, browser))
        code = AuthorizeRequest.from_location(callback).params["code"]
        query = {"code": code} if state is None else {"code": code, "state": state}
        response = await browser.get(f"{CALLBACK}?{urlencode(query)}")
        await assert_login_failed(h, browser, response)
        assert h.provider.token.call_count == 0


async def test_callback_without_a_code_fails(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        state = AuthorizeRequest.from_location(await start(h, browser)).params["state"]
        response = await browser.get(CALLBACK, params={"state": state})
        await assert_login_failed(h, browser, response)


async def test_a_replayed_callback_with_the_same_login_cookie_fails(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        callback = h.provider.authorize(await start(h, browser))
        login_cookie = browser.cookies[LOGIN_COOKIE]
        assert (await browser.get(callback)).status_code == 302

        replayer = h.browser()
        replayer.cookies[LOGIN_COOKIE] = login_cookie
        response = await replayer.get(callback)
        await assert_login_failed(h, replayer, response)
        assert h.provider.token.call_count == 1


async def test_a_callback_meant_for_another_browsers_login_fails(
    upstream: respx.MockRouter,
) -> None:
    """Login CSRF: an attacker's code and state, delivered to the victim's browser."""
    async with running_app(upstream) as h:
        victim, attacker = h.browser(), h.browser()
        await start(h, victim)
        attackers_callback = h.provider.authorize(await start(h, attacker), "bob")
        response = await victim.get(attackers_callback)
        await assert_login_failed(h, victim, response)
        assert h.provider.token.call_count == 0


async def test_login_cookies_swapped_between_two_browsers_fail_both(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        first, second = h.browser(), h.browser()
        first_callback = h.provider.authorize(await start(h, first))
        second_callback = h.provider.authorize(await start(h, second))
        first.cookies[LOGIN_COOKIE], second.cookies[LOGIN_COOKIE] = (
            second.cookies[LOGIN_COOKIE],
            first.cookies[LOGIN_COOKIE],
        )
        await assert_login_failed(h, first, await first.get(first_callback))
        await assert_login_failed(h, second, await second.get(second_callback))
        assert h.provider.token.call_count == 0


async def test_a_provider_error_fails_the_login(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        state = AuthorizeRequest.from_location(await start(h, browser)).params["state"]
        response = await browser.get(CALLBACK, params={"error": "access_denied", "state": state})
        await assert_login_failed(h, browser, response)
        assert h.provider.token.call_count == 0


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        ("access_denied", "(access_denied)"),
        ("<script>alert(1)</script> Call +1-555-0100", None),
    ],
)
async def test_only_an_oauth_error_code_is_repeated_back(
    upstream: respx.MockRouter, error: str, shown: str | None
) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        state = AuthorizeRequest.from_location(await start(h, browser)).params["state"]
        response = await browser.get(CALLBACK, params={"error": error, "state": state})
    detail = response.json()["detail"]
    if shown:
        assert shown in detail
    else:
        assert detail == "The identity provider refused the sign-in."


async def test_a_refused_code_exchange_fails_the_login(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        h.provider.code_error = "invalid_grant"
        browser = h.browser()
        response = await browser.get(h.provider.authorize(await start(h, browser)))
        await assert_login_failed(h, browser, response)
        assert h.provider.token.call_count == 1


async def test_the_code_exchange_proves_the_pkce_verifier(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        location = await start(h, browser)
        await browser.get(h.provider.authorize(location))
        sent = dict(
            item.split("=", 1)
            for item in h.provider.token.calls.last.request.content.decode().split("&")
        )
    verifier = sent["code_verifier"]
    challenge = AuthorizeRequest.from_location(location).params["code_challenge"]
    assert b64(hashlib.sha256(verifier.encode()).digest()) == challenge
    assert 43 <= len(verifier) <= 128
    assert sent["grant_type"] == "authorization_code"


# --- the session cookie --------------------------------------------------------------------------


async def test_a_successful_callback_sets_exactly_one_session_cookie_and_clears_the_login(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        response = await browser.get(h.provider.authorize(await start(h, browser)))
    assert response.status_code == 302
    assert response.headers["location"] == "/"
    cookies = set_cookies(response)
    sessions = [c for c in cookies if c.name == SESSION]
    assert len(sessions) == 1
    assert {k: v.lower() for k, v in sessions[0].attributes.items()} == {
        "httponly": "",
        "max-age": str(ABSOLUTE_TIMEOUT),
        "path": "/",
        "samesite": "strict",
    }
    assert len(sessions[0].value) >= 22
    cleared = [c for c in cookies if c.name == LOGIN_COOKIE]
    assert len(cleared) == 1 and cleared[0].deleted
    assert LOGIN_COOKIE not in browser.cookies
    assert {c.name for c in cookies} == {SESSION, LOGIN_COOKIE}


async def test_over_https_the_cookies_are_host_prefixed_and_secure(
    upstream: respx.MockRouter,
) -> None:
    origin = "https://dash.example"
    settings = auth_settings(bff={"public_origin": origin})
    async with running_app(upstream, settings=settings, base_url=origin) as h:
        browser = h.browser()
        start_response = await browser.get(LOGIN, params={"returnTo": "/"})
        params = AuthorizeRequest.from_location(start_response.headers["location"]).params
        callback = await browser.get(h.provider.authorize(start_response.headers["location"]))
        whoami = await browser.api("GET", WHOAMI)

    assert params["redirect_uri"] == f"{origin}/api/bff/v1/auth/callback"
    (login_cookie,) = set_cookies(start_response)
    assert login_cookie.name == "__Host-bff_login"
    assert "secure" in login_cookie.attributes
    assert "domain" not in login_cookie.attributes
    sessions = [c for c in set_cookies(callback) if not c.deleted]
    assert [c.name for c in sessions] == ["__Host-bff_session"]
    assert {k: v.lower() for k, v in sessions[0].attributes.items()} == {
        "httponly": "",
        "secure": "",
        "max-age": str(ABSOLUTE_TIMEOUT),
        "path": "/",
        "samesite": "strict",
    }
    assert whoami.status_code == 200, whoami.text


async def test_over_https_a_dead_session_cookie_is_cleared_with_secure(
    upstream: respx.MockRouter,
) -> None:
    # Browsers ignore a __Host- Set-Cookie without Secure, deletions included: without it the
    # dead id would stay in the browser until its Max-Age.
    origin = "https://dash.example"
    settings = auth_settings(bff={"public_origin": origin})
    async with running_app(upstream, settings=settings, base_url=origin) as h:
        raw_id = await h.insert_session("alice")
        await h.app.state.signin.sessions.store.delete(raw_id)
        response = await h.browser_with(raw_id).api("GET", WHOAMI)
    assert_problem(response, 401, "session-expired")
    (cleared,) = set_cookies(response)
    assert cleared.name == "__Host-bff_session"
    assert cleared.deleted
    assert "secure" in cleared.attributes
    assert cleared.attributes["path"] == "/"


@pytest.mark.parametrize(("userinfo_sub", "tenants"), [("alice", ["ten_globex"]), ("mallory", [])])
async def test_tenants_from_userinfo_are_used_only_when_it_names_the_same_user(
    upstream: respx.MockRouter, userinfo_sub: str, tenants: list[str]
) -> None:
    # OpenID Connect Core 5.3.2: a userinfo answer about another subject must not be used.
    async with running_app(upstream) as h:
        h.provider.id_token_hook = lambda claims: h.provider.signed(
            {k: v for k, v in claims.items() if k != "zen_tenants"}
        )
        h.provider.userinfo.respond(
            json={"sub": userinfo_sub, "zen_tenants": {"ten_globex": ["admin:delivery-flows"]}}
        )
        browser = h.browser()
        await h.login(browser, "alice")
        whoami = await browser.api("GET", WHOAMI)
    assert whoami.status_code == 200, whoami.text
    assert whoami.json()["user"]["sub"] == "alice"
    assert [t["id"] for t in whoami.json()["tenants"]] == tenants


# --- session fixation ----------------------------------------------------------------------------


async def test_a_session_id_planted_before_login_is_not_the_id_after_it(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        planted = "planted-by-an-attacker-0123456789abcdef"
        browser.cookies[SESSION] = planted
        new_id = await h.login(browser, "alice")
        assert new_id != planted
        attacker = h.browser_with(planted)
        assert_problem(await attacker.api("GET", WHOAMI), 401, "session-expired")


async def test_a_real_session_planted_before_login_is_ended_by_it(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        attacker = h.browser()
        attackers_session = await h.login(attacker, "bob")
        victim = h.browser_with(attackers_session)
        victims_session = await h.login(victim, "alice")

        assert victims_session != attackers_session
        assert_problem(await attacker.api("GET", WHOAMI), 401, "session-expired")
        whoami = await victim.api("GET", WHOAMI)
        assert whoami.json()["user"]["sub"] == "alice"


# --- the real protocol, against the development provider -----------------------------------------


def dev_app(upstream: respx.MockRouter, issuer: str) -> AbstractAsyncContextManager[Harness]:
    """The BFF signing in with the development provider; it dates tokens by the real clock."""
    settings = auth_settings(
        oidc={
            "issuer": issuer,
            "client_id": "flows-bff-dev",
            "client_secret": "dev-only-client-secret",
        }
    )
    return running_app(upstream, settings=settings, clock=FakeClock(time.time()), real_idp=True)


async def test_alice_signs_in_through_the_development_provider(
    upstream: respx.MockRouter, dev_issuer: str
) -> None:
    async with (
        dev_app(upstream, dev_issuer) as h,
        httpx.AsyncClient(trust_env=False, timeout=10) as idp,
    ):
        browser = h.browser()
        callback = await real_login(browser, idp, "alice", return_to="/flows")
        assert callback.status_code == 302, callback.text
        assert callback.headers["location"] == "/flows"
        assert [c.name for c in set_cookies(callback) if not c.deleted] == [SESSION]
        whoami = await browser.api("GET", WHOAMI)

    assert whoami.status_code == 200, whoami.text
    body = whoami.json()
    assert body["user"] == {"sub": "alice", "name": "Alice Admin", "email": "alice@acme.example"}
    assert body["tenants"] == [
        {
            "id": "ten_acme",
            "scopes": ["read:delivery-flows", "write:delivery-flows"],
            "permissions": {"read": True, "write": True},
        }
    ]
    # The provider's tokens are JWTs; none of them may reach the browser.
    assert "eyJ" not in whoami.text


async def test_a_replayed_callback_fails_against_the_development_provider(
    upstream: respx.MockRouter, dev_issuer: str
) -> None:
    async with (
        dev_app(upstream, dev_issuer) as h,
        httpx.AsyncClient(trust_env=False, timeout=10) as idp,
    ):
        browser = h.browser()
        start_response = await browser.get(LOGIN, params={"returnTo": "/"})
        login_cookie = browser.cookies[LOGIN_COOKIE]
        page = await idp.get(start_response.headers["location"])
        form = find_login_form(page)
        answer = await idp.post(form.action, data=form.submission("alice"))
        callback_url = answer.headers["location"]
        assert (await browser.get(callback_url)).status_code == 302

        replayer = Browser(h.client, cookies={LOGIN_COOKIE: login_cookie})
        await assert_login_failed(h, replayer, await replayer.get(callback_url))


async def test_session_fixation_with_the_development_provider(
    upstream: respx.MockRouter, dev_issuer: str
) -> None:
    async with (
        dev_app(upstream, dev_issuer) as h,
        httpx.AsyncClient(trust_env=False, timeout=10) as idp,
    ):
        attacker = h.browser()
        assert (await real_login(attacker, idp, "bob")).status_code == 302
        planted = attacker.cookies[SESSION]
        victim = h.browser_with(planted)
        assert (await real_login(victim, idp, "alice")).status_code == 302

        assert victim.cookies[SESSION] != planted
        assert_problem(await attacker.api("GET", WHOAMI), 401, "session-expired")
        assert (await victim.api("GET", WHOAMI)).json()["user"]["sub"] == "alice"


@pytest.mark.parametrize(
    ("status", "expected", "slug"),
    [(401, 400, "login-failed"), (403, 400, "login-failed"), (502, 503, "upstream-unavailable")],
)
async def test_a_userinfo_refusal_is_a_failed_sign_in_and_its_failure_a_503(
    upstream: respx.MockRouter, status: int, expected: int, slug: str
) -> None:
    async with running_app(upstream) as h:
        h.provider.id_token_hook = lambda claims: h.provider.signed(
            {k: v for k, v in claims.items() if k != "zen_tenants"}
        )
        h.provider.userinfo.respond(status)
        browser = h.browser()
        start = await browser.get(LOGIN, params={"returnTo": "/"})
        callback = await browser.get(h.provider.authorize(start.headers["location"], "alice"))
    assert callback.status_code == expected, callback.text
    assert callback.json()["type"].endswith("/" + slug)
    if expected == 400:
        assert "userinfo" in callback.json()["detail"]


async def test_a_sign_in_without_the_tenants_claim_is_logged_naming_the_claim(
    upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_app(upstream) as h:
        h.provider.id_token_hook = lambda claims: h.provider.signed(
            {k: v for k, v in claims.items() if k != "zen_tenants"}
        )
        h.provider.userinfo.respond(json={"sub": "alice", "name": "Alice"})
        await h.login(h.browser(), "alice")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'zen_tenants'" in message and "'alice'" in message for message in warnings)
