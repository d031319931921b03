"""``GET /auth/session/events``: a dashboard tab hears at once what becomes of its session.

Each way a session ends reaches an open stream with its reason; renewals and an approaching end
are told too; the stream is refused to other sites, to callers without a session and past its
bounds; it says nothing else, and it ends cleanly when the instance stops. Across instances (one
Redis): a sign-out on one reaches a stream on another within a second.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import respx
from redis.asyncio import Redis

from bff.state.invalidation import SESSIONS_CHANNEL
from bff.state.sessions import hash_session_id
from tests.support.clock import FakeClock
from tests.support.cookies import Browser
from tests.support.event_streams import EVENTS, EventReader, follow
from tests.support.gateway import (
    BACKCHANNEL,
    FLOWS,
    LOGOUT,
    SESSIONS,
    UP_FLOWS,
    WHOAMI,
    assert_problem,
)
from tests.support.keys import redis_sessions
from tests.support.openapi import assert_conforms, assert_event_conforms
from tests.support.processes import BFF_SCRIPT, clean_environ
from tests.support.provider import FakeProvider
from tests.support.redis import RedisServer
from tests.support.signin import (
    IDLE_TIMEOUT,
    Harness,
    auth_settings,
    running_app,
    running_instances,
)

PATH = "/auth/session/events"
QUICK = {"heartbeat_seconds": 0.05}
"""Beats often, so that a test's moved clock is looked at within a twentieth of a second."""
LISTING = {"delivery_flows": [], "next_cursor": None}


def quick(**events: Any) -> dict[str, Any]:
    return {"session_events": {**QUICK, **events}}


async def ended_with(stream: EventReader, reason: str, within: float = 1.0) -> None:
    """The stream's next event is ``ended`` for ``reason``, within ``within`` seconds, and last."""
    event = await stream.next_event(timeout=within)
    assert event.name == "ended", event
    assert event.data == {"reason": reason}
    assert_event_conforms(PATH, "get", event.documented())
    await stream.ends()


async def opened(stream: EventReader) -> None:
    """The stream answered as an event stream, and follows the session now."""
    assert stream.response.status_code == 200
    first = await stream.next()
    assert first.retry == 3000, first


async def get_refused(browser: Browser, **headers: str) -> httpx.Response:
    """A refusal is a whole answer; a stream opened by mistake fails the test, not hangs it."""
    return await asyncio.wait_for(browser.get(EVENTS, headers=headers), timeout=2)


# --- what the stream is -------------------------------------------------------------------------


async def test_the_stream_is_an_unbuffered_uncached_event_stream_that_beats_while_quiet(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream, settings=auth_settings(**quick())) as h:
        browser = h.browser()
        await h.login(browser, "alice")
        async with follow(h.app, browser) as stream:
            await opened(stream)
            headers = stream.response.headers
            assert headers["content-type"].startswith("text/event-stream")
            assert headers["cache-control"] == "no-store"
            assert headers["x-accel-buffering"] == "no"
            said = await stream.quiet_for(0.5)
    beats = [event for event in said if event.comment == "heartbeat"]
    assert said == beats, "nothing but heartbeats while nothing happens"
    assert 5 <= len(beats) <= 11, f"one every 0.05 s: {len(beats)} in 0.5 s"


# --- every way a session ends, with its reason --------------------------------------------------


async def _sign_out_in_another_tab(h: Harness, tab: Browser) -> None:
    other_tab = h.browser_with(tab.cookies[h.cookie_name])
    assert (await other_tab.api("POST", LOGOUT)).status_code == 200


async def _sign_out_everywhere_from_a_phone(h: Harness, tab: Browser) -> None:
    phone = h.browser()
    await h.login(phone, "alice")
    assert (await phone.api("DELETE", SESSIONS)).status_code == 200


async def _end_it_from_the_list_on_a_phone(h: Harness, tab: Browser) -> None:
    phone = h.browser()
    await h.login(phone, "alice")
    handle = hash_session_id(tab.cookies[h.cookie_name])
    assert (await phone.api("DELETE", f"{SESSIONS}/{handle}")).status_code == 204


async def _the_provider_logs_it_out(h: Harness, tab: Browser) -> None:
    token = h.provider.logout_token(sid="idp-session-1")
    answer = await h.client.post(BACKCHANNEL, data={"logout_token": token})
    assert answer.status_code == 200


async def _the_provider_refuses_a_refresh(h: Harness, tab: Browser) -> None:
    h.clock.advance(400)  # the access token is past its 300 s
    h.provider.refresh_mode = "invalid_grant"
    assert_problem(await tab.api("GET", FLOWS), 401, "session-expired")


async def _the_browser_signs_in_again(h: Harness, tab: Browser) -> None:
    await h.login(tab, "alice")


async def _it_times_out(h: Harness, tab: Browser) -> None:
    h.clock.advance(IDLE_TIMEOUT + 1)


ENDINGS: dict[str, Callable[[Harness, Browser], Awaitable[None]]] = {
    "signed-out": _sign_out_in_another_tab,
    "signed-out-everywhere": _sign_out_everywhere_from_a_phone,
    "revoked": _end_it_from_the_list_on_a_phone,
    "backchannel-logout": _the_provider_logs_it_out,
    "refresh-refused": _the_provider_refuses_a_refresh,
    "signed-in-again": _the_browser_signs_in_again,
    "expired": _it_times_out,
}


@pytest.mark.parametrize("reason", list(ENDINGS))
async def test_each_way_a_session_ends_reaches_its_stream_with_the_reason(
    upstream: respx.MockRouter, reason: str
) -> None:
    upstream.get(UP_FLOWS).respond(json=LISTING)
    async with running_app(upstream, settings=auth_settings(**quick())) as h:
        h.provider.expires_in = 300
        h.provider.sid_of_login = "idp-session-1"
        tab = h.browser()
        await h.login(tab, "alice")
        async with follow(h.app, tab) as stream:
            await opened(stream)
            await ENDINGS[reason](h, tab)
            await ended_with(stream, reason)
        assert h.app.state.signin.events.open_streams == 0
        assert "\nbff_session_streams_open 0.0\n" in (await h.client.get("/metrics")).text


async def test_a_stream_opened_with_an_ended_session_is_refused_and_the_cookie_cleared(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        tab = h.browser()
        await h.login(tab, "alice")
        raw_id = tab.cookies[h.cookie_name]
        assert (await tab.api("DELETE", SESSIONS)).status_code == 200
        stale = h.browser_with(raw_id)
        answer = await get_refused(stale, **{"Sec-Fetch-Site": "same-origin"})
        assert_problem(answer, 401, "session-expired")
        assert h.cookie_name not in stale.cookies
        assert_conforms(PATH, "get", answer)


async def test_without_a_session_the_stream_is_refused(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        answer = await get_refused(h.browser(), **{"Sec-Fetch-Site": "same-origin"})
    assert_problem(answer, 401, "authentication-required")
    assert_conforms(PATH, "get", answer)


@pytest.mark.parametrize("site", ["cross-site", "same-site", "none", None])
async def test_a_stream_not_started_by_the_dashboards_own_page_is_refused(
    upstream: respx.MockRouter, site: str | None
) -> None:
    async with running_app(upstream) as h:
        tab = h.browser()
        await h.login(tab, "alice")
        answer = await get_refused(tab, **({"Sec-Fetch-Site": site} if site else {}))
        assert_problem(answer, 403, "csrf-check-failed")
        assert_conforms(PATH, "get", answer)
        assert h.app.state.signin.events.open_streams == 0
        assert tab.cookies, "the session goes on"


# --- renewed and expiring -----------------------------------------------------------------------


async def test_a_token_refresh_is_told_as_renewed_with_the_later_end(
    upstream: respx.MockRouter,
) -> None:
    upstream.get(UP_FLOWS).respond(json=LISTING)
    async with running_app(upstream, settings=auth_settings(**quick())) as h:
        h.provider.expires_in = 300
        tab = h.browser()
        await h.login(tab, "alice")
        before = (await tab.api("GET", WHOAMI)).json()["expiresAt"]
        async with follow(h.app, tab) as stream:
            await opened(stream)
            h.clock.advance(250)  # within the refresh margin, long before the session's end
            assert (await tab.api("GET", FLOWS)).status_code == 200
            assert h.provider.refresh_calls == 1
            event = await stream.next_event(timeout=1)
            assert event.name == "renewed", event
            assert event.data["expiresAt"] > before
            assert event.data == {"expiresAt": (await tab.api("GET", WHOAMI)).json()["expiresAt"]}
            assert_event_conforms(PATH, "get", event.documented())


async def test_expiring_comes_shortly_before_the_end_and_a_call_elsewhere_renews_it(
    upstream: respx.MockRouter,
) -> None:
    settings = auth_settings(**quick(expiring_seconds=120))
    async with running_app(upstream, settings=settings) as h:
        tab = h.browser()
        await h.login(tab, "alice")
        ends = (await tab.api("GET", WHOAMI)).json()["expiresAt"]
        async with follow(h.app, tab) as stream:
            await opened(stream)
            h.clock.advance(IDLE_TIMEOUT - 200)
            said = await stream.quiet_for(0.2)
            assert not any(event.name for event in said), "nothing yet, 200 s before the end"
            h.clock.advance(100)
            expiring = await stream.next_event(timeout=1)
            assert expiring.name == "expiring", expiring
            assert expiring.data == {"expiresAt": ends}
            assert_event_conforms(PATH, "get", expiring.documented())
            # Another tab makes a call: the session is used, so it ends later.
            await h.browser_with(tab.cookies[h.cookie_name]).api("GET", WHOAMI)
            renewed = await stream.next_event(timeout=1)
            assert renewed.name == "renewed", renewed
            assert renewed.data["expiresAt"] > ends
            h.clock.advance(IDLE_TIMEOUT + 1)
            await ended_with(stream, "expired")


async def test_following_the_session_is_not_activity(upstream: respx.MockRouter) -> None:
    """An open tab left alone still times out: the stream's own looks do not keep it alive."""
    async with running_app(upstream, settings=auth_settings(**quick())) as h:
        tab = h.browser()
        await h.login(tab, "alice")
        async with follow(h.app, tab) as stream:
            await opened(stream)
            for _ in range(6):  # through the warning window, looked at on every beat
                h.clock.advance(IDLE_TIMEOUT / 6 - 1)
                await stream.quiet_for(0.12)
            h.clock.advance(7)
            await ended_with(stream, "expired")
        assert_problem(await tab.api("GET", WHOAMI), 401, "session-expired")


# --- what the stream never says -----------------------------------------------------------------


async def test_the_stream_carries_no_token_no_session_id_and_nothing_of_another_user(
    upstream: respx.MockRouter,
) -> None:
    upstream.get(UP_FLOWS).respond(json=LISTING)
    async with running_app(upstream, settings=auth_settings(**quick())) as h:
        h.provider.expires_in = 300
        tab = h.browser()
        raw_id = await h.login(tab, "alice")
        bob = h.browser()
        await h.login(bob, "bob")
        async with follow(h.app, tab) as stream:
            await opened(stream)
            assert (await bob.api("POST", LOGOUT)).status_code == 200
            said = await stream.quiet_for(0.3)
            assert not any(event.name for event in said), "bob's sign-out is not alice's news"
            h.clock.advance(250)
            assert (await tab.api("GET", FLOWS)).status_code == 200  # refreshed: renewed
            assert (await stream.next_event()).name == "renewed"
            store = h.app.state.signin.sessions.store
            (_, session), *_ = await store.sessions_of("alice")
            assert (await tab.api("POST", LOGOUT)).status_code == 200
            await ended_with(stream, "signed-out")
        secrets = {
            "session id": raw_id,
            "session handle": hash_session_id(raw_id),
            "access token": session.access_token,
            "refresh token": session.refresh_token,
            "ID token": session.id_token,
        }
        for name, secret in secrets.items():
            assert secret and secret not in stream.text, f"the stream carries the {name}"
        for other in ("bob", "alice", "Alice", "@"):
            assert other not in stream.text, f"the stream names a user: {other!r}"


# --- bounds -------------------------------------------------------------------------------------


async def test_streams_are_bounded_per_session_and_per_instance_with_429(
    upstream: respx.MockRouter,
) -> None:
    settings = auth_settings(**quick(max_streams_per_session=2, max_streams=3))
    async with running_app(upstream, settings=settings) as h:
        laptop, phone = h.browser(), h.browser()
        await h.login(laptop, "alice")
        await h.login(phone, "alice")
        async with follow(h.app, laptop) as first, follow(h.app, laptop) as second:
            await opened(first)
            await opened(second)
            third = await get_refused(laptop, **{"Sec-Fetch-Site": "same-origin"})
            assert_problem(third, 429, "rate-limited")
            assert "already has 2 event streams open" in third.json()["detail"]
            assert third.headers["retry-after"] == "30"
            assert_conforms(PATH, "get", third)
            async with follow(h.app, phone) as on_the_phone:
                await opened(on_the_phone)
                scraped = (await h.client.get("/metrics")).text
                assert "\nbff_session_streams_open 3.0\n" in scraped, scraped
                past_the_instance = await get_refused(phone, **{"Sec-Fetch-Site": "same-origin"})
                assert_problem(past_the_instance, 429, "rate-limited")
                assert "as many sessions as it may" in past_the_instance.json()["detail"]
            # The phone's stream closed: its place is free again.
            async with follow(h.app, phone) as again:
                await opened(again)
        assert h.app.state.signin.events.open_streams == 0


# --- settings: mistakes explained ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"BFF__SESSION_EVENTS__HEARTBEAT_SECONDS": "90"},
            "[session_events].heartbeat_seconds: must be > 0 and under 60: proxies and load "
            "balancers commonly close a connection that is quiet for 60 s",
        ),
        (
            {"BFF__SESSION_EVENTS__HEARTBEAT_SECONDS": "0"},
            "[session_events].heartbeat_seconds: must be > 0 and under 60",
        ),
        (
            {"BFF__SESSION_EVENTS__EXPIRING_SECONDS": "1800"},
            "[session_events].expiring_seconds: must be >= 0 and less than "
            "[sessions].idle_timeout_seconds (1800): a session would be announced as expiring "
            "as soon as it is followed",
        ),
        (
            {"BFF__SESSION_EVENTS__MAX_STREAMS_PER_SESSION": "0"},
            "[session_events].max_streams_per_session: must be >= 1",
        ),
        (
            {"BFF__SESSION_EVENTS__MAX_STREAMS": "3"},
            "[session_events].max_streams_per_session: must be <= [session_events].max_streams "
            "(3): one browser could hold every stream of the instance",
        ),
    ],
)
def test_check_config_explains_a_wrong_stream_setting(
    variables: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [str(BFF_SCRIPT), "check-config"],
        env=clean_environ(**variables),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith("bff: configuration error: "), result.stderr
    assert message in result.stderr, result.stderr


# --- shutdown -----------------------------------------------------------------------------------


async def test_at_shutdown_open_streams_end_cleanly_and_new_ones_are_refused(
    upstream: respx.MockRouter,
) -> None:
    # Beats far apart: a stream must end when told, not at its next beat.
    async with running_app(upstream, settings=auth_settings()) as h:
        tab = h.browser()
        await h.login(tab, "alice")
        async with follow(h.app, tab) as stream:
            await opened(stream)
            h.app.state.signin.events.close()
            await stream.ends(timeout=0.5)
        answer = await get_refused(tab, **{"Sec-Fetch-Site": "same-origin"})
        assert_problem(answer, 503, "service-unavailable")
        assert answer.headers["retry-after"] == "1"
        assert_conforms(PATH, "get", answer)


async def test_leaving_the_lifespan_ends_the_streams_it_left_open(
    upstream: respx.MockRouter,
) -> None:
    async with AsyncExitStack() as streams:
        async with running_app(upstream, settings=auth_settings()) as h:
            tab = h.browser()
            await h.login(tab, "alice")
            stream = await streams.enter_async_context(follow(h.app, tab))
            await opened(stream)
            reading = asyncio.create_task(stream.ends(timeout=5))
        # The app has stopped; the stream it left open was ended, not cut.
        await asyncio.wait_for(reading, timeout=1)


# --- several instances on one Redis -------------------------------------------------------------


@pytest.fixture
def provider(upstream: respx.MockRouter) -> FakeProvider:
    upstream.get(UP_FLOWS).respond(json=LISTING)
    return FakeProvider(FakeClock())


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("reason", ["signed-out-everywhere", "backchannel-logout"])
async def test_a_session_ended_on_one_instance_reaches_a_stream_on_another_within_a_second(
    redis: Redis,
    redis_server: RedisServer,
    upstream: respx.MockRouter,
    provider: FakeProvider,
    reason: str,
) -> None:
    settings = auth_settings(sessions=redis_sessions(redis_server.url), **quick())
    async with running_instances(settings, upstream, provider) as (first, second):
        provider.sid_of_login = "idp-session-1"
        tab = first.browser()
        await first.login(tab, "alice")
        async with follow(second.app, tab) as stream:
            await opened(stream)
            started = time.monotonic()
            if reason == "signed-out-everywhere":
                phone = first.browser()
                await first.login(phone, "alice")
                started = time.monotonic()
                assert (await phone.api("DELETE", SESSIONS)).status_code == 200
            else:
                token = provider.logout_token(sid="idp-session-1")
                answer = await first.client.post(BACKCHANNEL, data={"logout_token": token})
                assert answer.status_code == 200
            await ended_with(stream, reason, within=1.0)
            assert time.monotonic() - started < 1.0


@pytest.mark.redis
async def test_after_the_channel_comes_back_each_stream_looks_at_its_session_again(
    redis: Redis, redis_server: RedisServer, upstream: respx.MockRouter, provider: FakeProvider
) -> None:
    settings = auth_settings(sessions=redis_sessions(redis_server.url), **quick())
    async with running_instances(settings, upstream, provider, count=1) as (h,):
        tab = h.browser()
        raw_id = await h.login(tab, "alice")
        async with follow(h.app, tab) as stream:
            await opened(stream)
            # While the channel is cut, the session goes and no word of it can arrive.
            invalidation = h.app.state.services.invalidation
            await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            await redis.delete(f"bff:session:{hash_session_id(raw_id)}")
            await asyncio.sleep(0.05)
            await asyncio.wait_for(invalidation.subscribed.wait(), timeout=5)
            await ended_with(stream, "unknown", within=2.0)


@pytest.mark.redis
async def test_a_reason_a_later_release_announces_is_an_end_all_the_same(
    redis: Redis, redis_server: RedisServer, upstream: respx.MockRouter, provider: FakeProvider
) -> None:
    settings = auth_settings(sessions=redis_sessions(redis_server.url), **quick())
    async with running_instances(settings, upstream, provider, count=1) as (h,):
        tab = h.browser()
        raw_id = await h.login(tab, "alice")
        async with follow(h.app, tab) as stream:
            await opened(stream)
            handle = hash_session_id(raw_id)
            await redis.publish(SESSIONS_CHANNEL, f"{handle}\x1fended:some-new-reason")
            await ended_with(stream, "unknown")


@pytest.mark.parametrize(
    ("hard", "soft_after", "warned"),
    [(2000, 1256, False), (600, 600, True)],
    ids=["raised-to-what-the-streams-need", "capped-by-the-hard-limit"],
)
def test_the_open_files_limit_is_raised_for_the_streams_or_the_start_warns(
    hard: int, soft_after: int, warned: bool
) -> None:
    # In a process of its own: the limits are the process's.
    script = f"""
import logging, resource
logging.basicConfig(level=logging.WARNING, format="%(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (300, {hard}))
from bff.auth.session_events import _warn_unless_files_suffice
_warn_unless_files_suffice(1000)
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert ran.stdout.strip() == str(soft_after)
    assert ("open-files limit (600)" in ran.stderr) is warned, ran.stderr
