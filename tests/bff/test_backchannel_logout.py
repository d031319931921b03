"""OIDC Back-Channel Logout: the provider ends sessions by ``sid`` or by ``sub``.

A logout token is validated fully; anything wrong is a 400 that ends nothing. Every answer
carries ``Cache-Control: no-store``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx

from tests.support.gateway import BACKCHANNEL, WHOAMI, assert_problem
from tests.support.provider import FakeProvider, attacker_key
from tests.support.signin import Harness, running_app
from tests.support.tokens import sign

FORM = "application/x-www-form-urlencoded"


async def post_logout(h: Harness, token: str, content_type: str = FORM) -> httpx.Response:
    if content_type == FORM:
        return await h.client.post(BACKCHANNEL, data={"logout_token": token})
    return await h.client.post(
        BACKCHANNEL,
        content=f'{{"logout_token": "{token}"}}',
        headers={"Content-Type": content_type},
    )


async def alive(h: Harness, raw_id: str) -> bool:
    response = await h.browser_with(raw_id).api("GET", WHOAMI)
    if response.status_code == 401:
        assert_problem(response, 401, "session-expired")
        return False
    assert response.status_code == 200, response.text
    return True


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"] == "invalid_request"


async def test_a_logout_token_with_a_sid_ends_that_session_only(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        ended = await h.insert_session("alice", sid="idp-session-1")
        other_tab_elsewhere = await h.insert_session("alice", sid="idp-session-2")
        bob = await h.insert_session("bob", sid="idp-session-3")

        response = await post_logout(h, h.provider.logout_token(sid="idp-session-1"))

        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        assert not await alive(h, ended)
        assert await alive(h, other_tab_elsewhere)
        assert await alive(h, bob)


async def test_the_sid_of_a_real_login_is_remembered_for_back_channel_logout(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        h.provider.sid_of_login = "idp-session-from-login"
        browser = h.browser()
        raw_id = await h.login(browser, "alice")
        assert await alive(h, raw_id)

        response = await post_logout(h, h.provider.logout_token(sid="idp-session-from-login"))

        assert response.status_code == 200
        assert not await alive(h, raw_id)


async def test_a_logout_token_with_only_a_sub_ends_every_session_of_that_user(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        alice_sessions = [
            await h.insert_session("alice", sid="s-1"),
            await h.insert_session("alice", sid="s-2"),
            await h.insert_session("alice"),
        ]
        bob = await h.insert_session("bob", sid="s-3")

        response = await post_logout(h, h.provider.logout_token(sub="alice"))

        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert [await alive(h, raw_id) for raw_id in alice_sessions] == [False] * 3
        assert await alive(h, bob)


async def test_a_replayed_logout_token_is_refused(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        await h.insert_session("alice", sid="s-1")
        token = h.provider.logout_token(sid="s-1")
        assert (await post_logout(h, token)).status_code == 200
        later = await h.insert_session("alice", sid="s-1")

        assert_refused(await post_logout(h, token))
        assert await alive(h, later)


def _claims(p: FakeProvider, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": "http://idp.test",
        "aud": "flows-bff-test",
        "iat": int(p.clock()),
        "jti": "jti-" + str(time.monotonic_ns()),
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        "sid": "s-1",
        **changes,
    }
    return {k: v for k, v in base.items() if v is not None}


BAD_TOKENS: dict[str, Callable[[FakeProvider], str]] = {
    "with-nonce": lambda p: p.logout_token(sid="s-1", nonce="n-1"),
    "no-events": lambda p: p.signed(_claims(p, events=None), typ="logout+jwt"),
    "wrong-event": lambda p: p.signed(
        _claims(p, events={"http://schemas.openid.net/event/other": {}}), typ="logout+jwt"
    ),
    "no-sid-or-sub": lambda p: p.signed(_claims(p, sid=None), typ="logout+jwt"),
    "no-jti": lambda p: p.signed(_claims(p, jti=None), typ="logout+jwt"),
    "wrong-aud": lambda p: p.logout_token(sid="s-1", aud="another-client"),
    "wrong-iss": lambda p: p.logout_token(sid="s-1", iss="http://evil.test"),
    "too-old": lambda p: p.logout_token(sid="s-1", iat=int(p.clock()) - 3600),
    "foreign-key": lambda p: sign(_claims(p), attacker_key(), typ="logout+jwt"),
    "an-id-token": lambda p: p.signed(_claims(p, events=None, sub="alice", nonce="n")),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_an_invalid_logout_token_is_refused_and_ends_nothing(
    upstream: respx.MockRouter, case: str
) -> None:
    async with running_app(upstream) as h:
        raw_id = await h.insert_session("alice", sid="s-1")
        assert_refused(await post_logout(h, BAD_TOKENS[case](h.provider)))
        assert await alive(h, raw_id)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
async def test_a_logout_token_in_another_content_type_is_refused(
    upstream: respx.MockRouter, content_type: str
) -> None:
    async with running_app(upstream) as h:
        raw_id = await h.insert_session("alice", sid="s-1")
        token = h.provider.logout_token(sid="s-1")
        assert_refused(await post_logout(h, token, content_type))
        assert await alive(h, raw_id)
        # The same token, properly sent, still works: the refusal did not burn it.
        assert (await post_logout(h, token)).status_code == 200
        assert not await alive(h, raw_id)


async def test_a_request_without_a_logout_token_is_refused(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        assert_refused(await h.client.post(BACKCHANNEL, data={"token": "x"}))
        assert_refused(await h.client.post(BACKCHANNEL, data={"logout_token": ""}))
