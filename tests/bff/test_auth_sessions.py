"""Signed-in sessions: who am I, logout, idle and absolute timeouts, inline token refresh."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import respx

from bff.auth.authenticators import RELAY_SAFETY_SECONDS
from bff.state.sessions import hash_session_id
from tests.support.clock import START
from tests.support.cookies import Browser, set_cookies
from tests.support.gateway import BFF, FLOWS, LOGOUT, SESSIONS, UP_FLOWS, WHOAMI, assert_problem
from tests.support.provider import CLIENT_ID, ISSUER
from tests.support.signin import ABSOLUTE_TIMEOUT, IDLE_TIMEOUT, Harness, auth_settings, running_app

SESSION = "bff_session"
EMPTY_PAGE = {"delivery_flows": [], "next_cursor": None}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cleared_session_cookie(response: httpx.Response) -> bool:
    return any(c.name == SESSION and c.deleted for c in set_cookies(response))


async def assert_signed_out(h: Harness, browser: Browser, raw_id: str) -> None:
    """The id is dead everywhere: who-am-I and API calls get 401 session-expired."""
    response = await h.browser_with(raw_id).api("GET", WHOAMI)
    assert_problem(response, 401, "session-expired")
    assert "www-authenticate" in response.headers
    assert cleared_session_cookie(response)
    assert_problem(await h.browser_with(raw_id).api("GET", FLOWS), 401, "session-expired")
    assert await h.app.state.signin.sessions.store.get(raw_id) is None


# --- who am I ------------------------------------------------------------------------------------


async def test_session_describes_the_user_their_tenants_and_the_expiry(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        raw_id = await h.login(browser, "alice")
        h.clock.advance(100)
        response = await browser.api("GET", WHOAMI)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "user": {"sub": "alice", "name": "Alice Admin", "email": "alice@acme.example"},
        "tenants": [
            {
                "id": "ten_acme",
                "scopes": ["read:delivery-flows", "write:delivery-flows"],
                "permissions": {"read": True, "write": True},
            }
        ],
        # Activity at +100 s slides the idle timeout: the session now ends at +100 + idle.
        "expiresAt": iso(START + 100 + IDLE_TIMEOUT),
        "authTime": iso(START),
        "acr": None,
        "refreshable": True,
        "sessionId": hash_session_id(raw_id),
        "signOutUrl": LOGOUT,
        "sessionsUrl": SESSIONS,
    }


async def test_session_of_a_reader_says_it_may_not_write(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        browser = h.browser_with(await h.insert_session("bob"))
        body = (await browser.api("GET", WHOAMI)).json()
    assert body["tenants"] == [
        {
            "id": "ten_acme",
            "scopes": ["read:delivery-flows"],
            "permissions": {"read": True, "write": False},
        }
    ]


async def test_session_never_shows_a_token(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        await h.login(browser, "alice")
        response = await browser.api("GET", WHOAMI)
        secrets_of_the_session = [*h.provider.access_tokens, *h.provider.refresh_tokens]
    assert response.status_code == 200
    assert len(secrets_of_the_session) == 2
    assert "eyJ" not in response.text  # no JWT at all: no ID token
    for token in secrets_of_the_session:
        assert token not in response.text
    assert "token" not in response.text.lower()


async def test_session_without_a_cookie_is_a_401_problem(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        response = await h.browser().api("GET", WHOAMI)
    assert_problem(response, 401, "authentication-required")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_session_without_the_csrf_header_is_refused(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        browser = h.browser_with(await h.insert_session("alice"))
        response = await browser.get(WHOAMI)
        assert_problem(response, 403, "csrf-check-failed")
        assert (await browser.api("GET", WHOAMI)).status_code == 200


# --- logout --------------------------------------------------------------------------------------


async def test_logout_ends_the_session_revokes_the_refresh_token_and_clears_the_cookie(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        raw_id = await h.login(browser, "alice")
        (refresh_token,) = h.provider.refresh_tokens
        response = await browser.api("POST", LOGOUT)

        assert response.status_code == 200, response.text
        assert cleared_session_cookie(response)
        assert SESSION not in browser.cookies
        assert h.provider.revocation.call_count == 1
        assert h.provider.revoked == [refresh_token]
        end_session = response.json()["endSessionUrl"]
        assert end_session.startswith(f"{ISSUER}/logout?")
        params = {k: v[0] for k, v in parse_qs(urlsplit(end_session).query).items()}
        assert params["client_id"] == CLIENT_ID
        assert params["post_logout_redirect_uri"] == f"{BFF}/"
        assert "id_token_hint" not in params, "no token in a URL unless configured"
        assert "logout_hint" not in params
        await assert_signed_out(h, browser, raw_id)


async def test_the_end_session_url_takes_the_configured_redirect_and_hints(
    upstream: respx.MockRouter,
) -> None:
    settings = auth_settings(
        oidc={
            "post_logout_redirect": f"{BFF}/signed-out",
            "end_session_id_token_hint": True,
            "end_session_logout_hint": "sub",
        }
    )
    async with running_app(upstream, settings=settings) as h:
        browser = h.browser()
        await h.login(browser, "alice")
        response = await browser.api("POST", LOGOUT)
    end_session = response.json()["endSessionUrl"]
    params = {k: v[0] for k, v in parse_qs(urlsplit(end_session).query).items()}
    assert params["post_logout_redirect_uri"] == f"{BFF}/signed-out"
    assert params["id_token_hint"].startswith("eyJ")
    assert params["logout_hint"] == "alice"


async def test_logout_is_csrf_checked(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        await h.login(browser, "alice")
        no_header = await browser.request("POST", LOGOUT, headers={"Origin": BFF})
        foreign = await browser.request(
            "POST", LOGOUT, headers={"X-CSRF": "1", "Origin": "https://evil.example"}
        )
        assert_problem(no_header, 403, "csrf-check-failed")
        assert_problem(foreign, 403, "csrf-check-failed")
        assert h.provider.revocation.call_count == 0
        assert not cleared_session_cookie(no_header) and not cleared_session_cookie(foreign)
        assert (await browser.api("GET", WHOAMI)).status_code == 200


# --- timeouts ------------------------------------------------------------------------------------


async def test_the_idle_timeout_ends_the_session(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        raw_id = await h.insert_session("alice")
        browser = h.browser_with(raw_id)
        h.clock.advance(IDLE_TIMEOUT - 1)
        assert (await browser.api("GET", WHOAMI)).status_code == 200
        h.clock.advance(IDLE_TIMEOUT)
        await assert_signed_out(h, browser, raw_id)


async def test_activity_slides_the_idle_timeout(upstream: respx.MockRouter) -> None:
    upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    async with running_app(upstream) as h:
        browser = h.browser_with(await h.insert_session("alice"))
        for _ in range(4):  # 4 times (idle - 60) s, far past one idle timeout
            h.clock.advance(IDLE_TIMEOUT - 60)
            assert (await browser.api("GET", FLOWS)).status_code == 200


async def test_the_absolute_timeout_ends_the_session_despite_activity(
    upstream: respx.MockRouter,
) -> None:
    upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    async with running_app(upstream) as h:
        raw_id = await h.insert_session("alice")
        browser = h.browser_with(raw_id)
        step = IDLE_TIMEOUT - 60
        while h.clock.now + step < START + ABSOLUTE_TIMEOUT:
            h.clock.advance(step)
            assert (await browser.api("GET", FLOWS)).status_code == 200
        h.clock.advance(step)
        assert h.clock.now - START < ABSOLUTE_TIMEOUT + IDLE_TIMEOUT
        await assert_signed_out(h, browser, raw_id)


# --- token refresh -------------------------------------------------------------------------------


def sent_tokens(route: respx.Route) -> list[str]:
    return [call.request.headers["authorization"].removeprefix("Bearer ") for call in route.calls]


async def test_an_access_token_near_expiry_is_refreshed_before_forwarding(
    upstream: respx.MockRouter,
) -> None:
    flows = upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    async with running_app(upstream) as h:
        h.provider.expires_in = 300
        browser = h.browser()
        await h.login(browser, "alice")
        first_token = h.provider.access_tokens[0]
        assert (await browser.api("GET", FLOWS)).status_code == 200
        h.clock.advance(300 - 30)  # inside the 60 s refresh margin
        assert (await browser.api("GET", FLOWS)).status_code == 200
        assert (await browser.api("GET", FLOWS)).status_code == 200

        assert h.provider.refresh_calls == 1
        second_token = h.provider.access_tokens[1]
        assert sent_tokens(flows) == [first_token, second_token, second_token]


async def test_concurrent_calls_with_an_expired_token_refresh_once(
    upstream: respx.MockRouter,
) -> None:
    flows = upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    async with running_app(upstream) as h:
        h.provider.expires_in = 300
        browser = h.browser()
        await h.login(browser, "alice")
        h.clock.advance(400)  # expired
        h.provider.refresh_gate = asyncio.Event()

        calls = [asyncio.create_task(browser.api("GET", FLOWS)) for _ in range(10)]
        for _ in range(200):  # let every call run up to the refresh
            await asyncio.sleep(0)
        # Every call is waiting for the one refresh the provider holds back.
        assert h.provider.refresh_calls == 1
        assert not any(call.done() for call in calls)
        h.provider.refresh_gate.set()
        responses = await asyncio.gather(*calls)

    assert [r.status_code for r in responses] == [200] * 10
    assert h.provider.refresh_calls == 1
    assert sent_tokens(flows) == [h.provider.access_tokens[1]] * 10


async def test_a_refused_refresh_ends_the_session(upstream: respx.MockRouter) -> None:
    flows = upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    async with running_app(upstream) as h:
        h.provider.expires_in = 300
        browser = h.browser()
        raw_id = await h.login(browser, "alice")
        h.clock.advance(400)
        h.provider.refresh_mode = "invalid_grant"

        response = await browser.api("GET", FLOWS)
        assert_problem(response, 401, "session-expired")
        assert cleared_session_cookie(response)
        assert h.provider.refresh_calls == 1
        await assert_signed_out(h, browser, raw_id)
        assert h.provider.refresh_calls == 1
    assert flows.call_count == 0


async def test_provider_down_during_refresh_with_a_still_valid_token_lets_the_call_through(
    upstream: respx.MockRouter,
) -> None:
    flows = upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    async with running_app(upstream) as h:
        h.provider.expires_in = 300
        browser = h.browser()
        await h.login(browser, "alice")
        h.clock.advance(300 - 30)
        h.provider.refresh_mode = "down"

        response = await browser.api("GET", FLOWS)
        assert response.status_code == 200, response.text
        assert h.provider.refresh_calls == 1
        assert sent_tokens(flows) == [h.provider.access_tokens[0]]

        # Once the token has run out, the provider must answer: 503, and the session survives.
        h.clock.advance(60)
        expired = await browser.api("GET", FLOWS)
        assert_problem(expired, 503, "upstream-unavailable")
        assert flows.call_count == 1
        h.provider.refresh_mode = "ok"
        assert (await browser.api("GET", FLOWS)).status_code == 200
        assert sent_tokens(flows)[-1] == h.provider.access_tokens[-1]


async def test_with_minted_upstream_tokens_a_provider_outage_does_not_stop_the_session(
    upstream: respx.MockRouter,
) -> None:
    """internal-jwt: the provider's access token is not what goes upstream."""
    flows = upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    settings = auth_settings(upstream={"credential": "internal-jwt"})
    async with running_app(upstream, settings=settings) as h:
        h.provider.expires_in = 300
        browser = h.browser()
        await h.login(browser, "alice")
        h.clock.advance(400)  # the provider's access token has run out
        h.provider.refresh_mode = "down"
        response = await browser.api("GET", FLOWS)
    assert response.status_code == 200, response.text
    assert h.provider.refresh_calls == 1
    assert flows.calls.last.request.headers["authorization"].startswith("Bearer ey")


async def test_a_short_lived_token_is_refreshed_in_the_last_fifth_of_its_life_not_always(
    upstream: respx.MockRouter,
) -> None:
    # The default margin (60 s) is the token's whole life here: a fifth of it (12 s) is used.
    upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    async with running_app(upstream) as h:
        h.provider.expires_in = 60
        browser = h.browser()
        await h.login(browser, "alice")
        for _ in range(4):
            h.clock.advance(10)  # 40 s of 60: no refresh yet
            assert (await browser.api("GET", FLOWS)).status_code == 200
        assert h.provider.refresh_calls == 0
        h.clock.advance(9)  # 49 s: inside the last 12 s
        assert (await browser.api("GET", FLOWS)).status_code == 200
        assert h.provider.refresh_calls == 1


async def test_the_session_reports_when_and_how_the_user_authenticated(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        h.provider.id_token_hook = lambda claims: h.provider.signed(
            {**claims, "auth_time": int(START) - 30, "acr": "urn:mfa"}
        )
        browser = h.browser()
        await h.login(browser, "alice")
        me = (await browser.api("GET", WHOAMI)).json()
    assert me["authTime"] == iso(START - 30)
    assert me["acr"] == "urn:mfa"


async def test_a_relayed_session_without_a_refresh_token_says_it_ends_with_the_token(
    upstream: respx.MockRouter,
) -> None:
    # Relay mode (the test default): the user's own access token goes upstream.
    async with running_app(upstream) as h:
        h.provider.issues_refresh_tokens = False
        h.provider.expires_in = 300
        browser = h.browser()
        await h.login(browser, "alice")
        me = (await browser.api("GET", WHOAMI)).json()
        upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
        # ...and serves until then, its last fifth included (there is nothing to renew)...
        h.clock.advance(300 - RELAY_SAFETY_SECONDS - 1)
        assert (await browser.api("GET", FLOWS)).status_code == 200
        # ...but never sends a token about to expire on its way.
        h.clock.advance(1)
        assert_problem(await browser.api("GET", FLOWS), 401, "session-expired")
        assert h.provider.refresh_calls == 0
    assert me["refreshable"] is False
    # It ends with the token (less the few seconds a token needs to reach the backend)...
    assert me["expiresAt"] == iso(START + 300 - RELAY_SAFETY_SECONDS)


async def test_the_logout_hint_can_be_the_providers_session_id(
    upstream: respx.MockRouter,
) -> None:
    settings = auth_settings(oidc={"end_session_logout_hint": "sid"})
    async with running_app(upstream, settings=settings) as h:
        h.provider.sid_of_login = "idp-session-7"
        browser = h.browser()
        await h.login(browser, "alice")
        response = await browser.api("POST", LOGOUT)
    params = parse_qs(urlsplit(response.json()["endSessionUrl"]).query)
    assert params["logout_hint"] == ["idp-session-7"]
    assert "id_token_hint" not in params
