"""A user's own sessions: listed with their devices, ended one at a time or everywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import respx

from bff.state.sessions import hash_session_id
from tests.support.gateway import SESSIONS, WHOAMI, assert_problem
from tests.support.signin import Harness, auth_settings, running_app

FIREFOX_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
SCHEMA = json.loads((Path(__file__).parents[2] / "bff" / "audit.schema.json").read_text())


async def signed_in(h: Harness, user: str, user_agent: str) -> tuple[Any, str]:
    browser = h.browser(user_agent=user_agent)
    raw_id = await h.login(browser, user)
    return browser, raw_id


async def test_the_list_shows_each_device_and_which_one_is_this(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        laptop, laptop_id = await signed_in(h, "alice", FIREFOX_MAC)
        h.clock.advance(60)
        _, desktop_id = await signed_in(h, "alice", CHROME_WINDOWS)
        await signed_in(h, "bob", SAFARI_IPHONE)
        h.clock.advance(60)

        response = await laptop.api("GET", SESSIONS)

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    listed = response.json()["sessions"]
    assert [(s["id"], s["current"], s["device"]) for s in listed] == [
        (hash_session_id(laptop_id), True, "Firefox on macOS"),  # just used: first
        (hash_session_id(desktop_id), False, "Chrome on Windows"),
    ]
    assert listed[0]["userAgent"] == FIREFOX_MAC
    assert listed[1]["createdAt"] == listed[1]["lastSeenAt"] != listed[0]["lastSeenAt"]
    assert all(s["expiresAt"].endswith("Z") for s in listed)
    body = response.text
    assert laptop_id not in body and desktop_id not in body, "never a cookie's id"
    assert "SECRET" not in body and "token" not in body.lower()


async def test_the_session_endpoint_names_this_session_and_where_to_manage_it(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        browser, raw_id = await signed_in(h, "alice", FIREFOX_MAC)
        view = (await browser.api("GET", WHOAMI)).json()
    assert view["sessionId"] == hash_session_id(raw_id)
    assert view["signOutUrl"] == "/api/bff/v1/auth/logout"
    assert view["sessionsUrl"] == SESSIONS


async def test_ending_another_device_leaves_this_one_signed_in(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        laptop, _ = await signed_in(h, "alice", FIREFOX_MAC)
        desktop, desktop_id = await signed_in(h, "alice", CHROME_WINDOWS)
        refresh_tokens = list(h.provider.refresh_tokens)

        response = await laptop.api("DELETE", f"{SESSIONS}/{hash_session_id(desktop_id)}")

        assert response.status_code == 204, response.text
        assert "set-cookie" not in response.headers, "this browser's cookie stays"
        assert_problem(await desktop.api("GET", WHOAMI), 401, "session-expired")
        assert (await laptop.api("GET", WHOAMI)).status_code == 200
        assert h.provider.revoked == [refresh_tokens[1]], "its refresh token is revoked too"
        listed = (await laptop.api("GET", SESSIONS)).json()["sessions"]
        assert [s["device"] for s in listed] == ["Firefox on macOS"]


async def test_ending_this_session_from_the_list_signs_this_browser_out(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        browser, raw_id = await signed_in(h, "alice", FIREFOX_MAC)
        response = await browser.api("DELETE", f"{SESSIONS}/{hash_session_id(raw_id)}")
        assert response.status_code == 204
        assert h.cookie_name not in browser.cookies
        assert await h.app.state.signin.sessions.store.get(raw_id) is None


async def test_nobody_ends_another_users_session(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        alice, _ = await signed_in(h, "alice", FIREFOX_MAC)
        bob, bob_id = await signed_in(h, "bob", SAFARI_IPHONE)
        for target in (hash_session_id(bob_id), "0" * 64, "not-a-session"):
            response = await alice.api("DELETE", f"{SESSIONS}/{target}")
            body = assert_problem(response, 404, "not-found")
            assert bob_id not in json.dumps(body)
        assert (await bob.api("GET", WHOAMI)).status_code == 200
        assert h.provider.revoked == []


async def test_sign_out_everywhere_ends_every_session_of_the_user_only(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        laptop, _ = await signed_in(h, "alice", FIREFOX_MAC)
        desktop, _ = await signed_in(h, "alice", CHROME_WINDOWS)
        bob, _ = await signed_in(h, "bob", SAFARI_IPHONE)

        response = await laptop.api("DELETE", SESSIONS)

        assert response.status_code == 200, response.text
        assert response.json() == {"revoked": 2}
        assert h.cookie_name not in laptop.cookies
        assert_problem(await laptop.api("GET", WHOAMI), 401, "authentication-required")
        assert_problem(await desktop.api("GET", WHOAMI), 401, "session-expired")
        assert (await bob.api("GET", WHOAMI)).status_code == 200
        assert len(h.provider.revoked) == 2


async def test_managing_sessions_needs_a_session_and_the_csrf_checks(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        assert_problem(await h.browser().api("GET", SESSIONS), 401, "authentication-required")
        browser, raw_id = await signed_in(h, "alice", FIREFOX_MAC)
        no_header = await browser.request("DELETE", SESSIONS, headers={"Origin": h.base_url})
        foreign = await browser.request(
            "DELETE", SESSIONS, headers={"X-CSRF": "1", "Origin": "https://evil.example"}
        )
        assert_problem(no_header, 403, "csrf-check-failed")
        assert_problem(foreign, 403, "csrf-check-failed")
        assert await h.app.state.signin.sessions.store.get(raw_id) is not None


async def test_each_ended_session_is_audited_by_its_handle(
    upstream: respx.MockRouter, tmp_path: Path
) -> None:
    audit_file = tmp_path / "audit.jsonl"
    settings = auth_settings(audit={"sink": "file", "path": str(audit_file)})
    async with running_app(upstream, settings=settings) as h:
        laptop, laptop_id = await signed_in(h, "alice", FIREFOX_MAC)
        _, desktop_id = await signed_in(h, "alice", CHROME_WINDOWS)
        await laptop.api("DELETE", f"{SESSIONS}/{hash_session_id(desktop_id)}")
        await laptop.api("DELETE", SESSIONS)

    events = [json.loads(line) for line in audit_file.read_text().splitlines()]
    for event in events:
        jsonschema.validate(event, SCHEMA)
    assert [(e["event"], e["status"], e["session_id"]) for e in events] == [
        ("session.sign_in", 302, hash_session_id(laptop_id)),
        ("session.sign_in", 302, hash_session_id(desktop_id)),
        ("session.revoke", 204, hash_session_id(desktop_id)),
        ("session.revoke", 200, hash_session_id(laptop_id)),
    ]
    assert {e["actor"]["sub"] for e in events} == {"alice"}
    assert laptop_id not in audit_file.read_text()
