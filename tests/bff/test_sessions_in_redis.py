"""Sessions in Redis as production runs them: sealed at rest, answered from each instance's copy
while the invalidation channel is up, and ended everywhere at once."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import respx
from redis.asyncio import Redis

from bff import create_app
from bff.auth import static_authenticator
from bff.state.invalidation import RedisInvalidation
from bff.state.logins import LoginRequest
from bff.state.near_cache import NearCache
from bff.state.sealing import load_key_ring, new_key_line, rotate_ring
from bff.state.sessions import RedisSessionStore, Session, hash_session_id
from tests.support.clock import FakeClock
from tests.support.gateway import ALICE, BFF, FLOWS, LOGIN, LOGOUT, NO_IDP, UP_FLOWS, make_settings
from tests.support.keys import RING, redis_sessions
from tests.support.provider import USERS, FakeProvider
from tests.support.redis import RedisServer
from tests.support.signin import Harness, auth_settings, running_instances
from tests.support.silent import silent_listener

pytestmark = pytest.mark.redis

LISTING = {"delivery_flows": [], "next_cursor": None}


@pytest.fixture
def provider(upstream: respx.MockRouter) -> FakeProvider:
    """The provider the gateways sign users in at; the upstream lists an empty cluster."""
    upstream.get(UP_FLOWS).respond(json=LISTING)
    return FakeProvider(FakeClock())


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def _dump(redis: Redis) -> dict[bytes, list[bytes]]:
    """Every key of the database and what it holds, as Redis would write it out."""
    held: dict[bytes, list[bytes]] = {}
    async for key in redis.scan_iter(count=1000):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            held[key] = [await redis.get(key) or b""]
        elif kind == "hash":
            fields = await redis.hgetall(key)  # type: ignore[misc]
            held[key] = [part for pair in fields.items() for part in pair]
        elif kind == "set":
            held[key] = list(await redis.smembers(key))  # type: ignore[misc]
        else:
            held[key] = [kind.encode()]
    return held


# --- nothing readable at rest --------------------------------------------------------------------


async def test_a_dump_of_redis_holds_no_token_name_email_or_pkce_verifier(
    redis: Redis, redis_server: RedisServer, upstream: respx.MockRouter, provider: FakeProvider
) -> None:
    settings = auth_settings(sessions=redis_sessions(redis_server.url))
    async with running_instances(settings, upstream, provider, count=1) as (harness,):
        for user in ("alice", "bob"):
            raw_id = await harness.login(harness.browser(), user)
            assert (await harness.browser_with(raw_id).api("GET", FLOWS)).status_code == 200
        # A sign-in started and not finished: its state, nonce and PKCE verifier wait in Redis.
        pending = await harness.browser().get(LOGIN, params={"returnTo": "/"})
        assert pending.status_code == 302
        held = await _dump(redis)

    dump = b"\n".join(key + b"\n" + b"\n".join(values) for key, values in held.items())
    secrets = [*provider.access_tokens, *provider.refresh_tokens]
    for user in ("alice", "bob"):
        secrets += [USERS[user].sub, USERS[user].name, USERS[user].email]
    assert secrets and not [s for s in secrets if s.encode() in dump]
    assert not re.search(rb"eyJ[A-Za-z0-9_-]{8,}", dump), "a JWT (an ID token) is readable"
    # The pending sign-in opens with the ring; its verifier, nonce and state are nowhere else.
    logins = [
        msgspec.msgpack.decode(RING.open(values[0], key), type=LoginRequest)
        for key, values in held.items()
        if re.fullmatch(rb"bff:login:[0-9a-f]{64}", key)
    ]
    assert len(logins) == 1
    for secret in (logins[0].code_verifier, logins[0].nonce, logins[0].state):
        assert secret.encode() not in dump


async def test_a_record_copied_under_another_key_does_not_open(
    redis: Redis, redis_server: RedisServer, upstream: respx.MockRouter, provider: FakeProvider
) -> None:
    settings = auth_settings(sessions=redis_sessions(redis_server.url, near_cache_seconds=0))
    async with running_instances(settings, upstream, provider, count=1) as (harness,):
        alice = await harness.login(harness.browser(), "alice")
        mallory = await harness.login(harness.browser(), "bob")
        # Someone who can write to Redis puts alice's sealed record under bob's session.
        sealed = await redis.hget(f"bff:session:{hash_session_id(alice)}", "s")  # type: ignore[misc]
        await redis.hset(f"bff:session:{hash_session_id(mallory)}", "s", sealed)  # type: ignore[misc]
        swapped = await harness.browser_with(mallory).api("GET", FLOWS)
        still = await harness.browser_with(alice).api("GET", FLOWS)
    assert swapped.status_code == 401, swapped.text
    assert still.status_code == 200


async def test_a_record_sealed_with_a_key_not_in_the_ring_is_an_ended_session_logged_once(
    redis: Redis,
    redis_server: RedisServer,
    upstream: respx.MockRouter,
    provider: FakeProvider,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    newer = tmp_path / "newer.keys"
    newer.write_text(new_key_line() + "\n")
    older = auth_settings(sessions=redis_sessions(redis_server.url, near_cache_seconds=0))
    ahead = auth_settings(
        sessions={**redis_sessions(redis_server.url), "encryption_keys_file": str(newer)}
    )
    caplog.set_level(logging.WARNING, logger="bff.sealing")
    async with running_instances(ahead, upstream, provider, count=1) as (signer,):
        raw_id = await signer.login(signer.browser(), "alice")
    async with running_instances(older, upstream, provider, count=1) as (reader,):
        answers = [await reader.browser_with(raw_id).api("GET", FLOWS) for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert await redis.exists(f"bff:session:{hash_session_id(raw_id)}") == 1, "left for others"
    warnings = [r.getMessage() for r in caplog.records if r.name == "bff.sealing"]
    assert len(warnings) == 1 and "not in the key ring" in warnings[0], warnings


async def test_rotating_the_ring_signs_nobody_out(
    redis: Redis,
    redis_server: RedisServer,
    upstream: respx.MockRouter,
    provider: FakeProvider,
    tmp_path: Path,
) -> None:
    ring = tmp_path / "session.keys"
    ring.write_text(new_key_line() + "\n")
    settings = auth_settings(
        sessions={**redis_sessions(redis_server.url), "encryption_keys_file": str(ring)}
    )
    async with running_instances(settings, upstream, provider, count=1) as (before,):
        signed_in = await before.login(before.browser(), "alice")
    old_id, new_id = load_key_ring(ring).ids[0], rotate_ring(ring)
    async with running_instances(settings, upstream, provider, count=1) as (after,):
        kept = await after.browser_with(signed_in).api("GET", FLOWS)
        fresh = await after.login(after.browser(), "bob")
        sealed = await redis.hget(f"bff:session:{hash_session_id(fresh)}", "s")  # type: ignore[misc]
    assert kept.status_code == 200
    assert load_key_ring(ring).ids == [new_id, old_id]
    assert sealed[1 : 1 + sealed[0]] == new_id.encode(), "the new first key seals"


# --- one instance's copies, kept current by the channel -----------------------------------------


async def test_a_session_ended_on_one_instance_is_refused_by_the_other_at_once(
    redis: Redis, redis_server: RedisServer, upstream: respx.MockRouter, provider: FakeProvider
) -> None:
    settings = auth_settings(sessions=redis_sessions(redis_server.url, near_cache_seconds=300))
    async with running_instances(settings, upstream, provider) as (first, second):
        raw_id = await first.login(first.browser(), "alice")
        browser = second.browser_with(raw_id)
        assert (await browser.api("GET", FLOWS)).status_code == 200  # now in second's copies
        signed_out = await first.browser_with(raw_id).api("POST", LOGOUT)
        assert signed_out.status_code == 200
        deadline = time.monotonic() + 1.0
        while (status := (await browser.api("GET", FLOWS)).status_code) == 200:
            assert time.monotonic() < deadline, "the other instance kept answering from its copy"
            await asyncio.sleep(0.01)
    assert status == 401


async def test_sign_out_everywhere_and_back_channel_logout_reach_every_copy(
    redis: Redis, redis_server: RedisServer, upstream: respx.MockRouter, provider: FakeProvider
) -> None:
    settings = auth_settings(sessions=redis_sessions(redis_server.url, near_cache_seconds=300))
    async with running_instances(settings, upstream, provider) as (first, second):
        phone = await first.insert_session("alice", sid="sid-phone")
        laptop = await first.insert_session("alice", sid="sid-laptop")
        for raw_id in (phone, laptop):
            assert (await second.browser_with(raw_id).api("GET", FLOWS)).status_code == 200
        ended = await first.client.post(
            "/api/bff/v1/auth/backchannel-logout",
            data={"logout_token": provider.logout_token(sid="sid-phone")},
        )
        assert ended.status_code == 200
        everywhere = await first.browser_with(laptop).api("DELETE", "/api/bff/v1/auth/sessions")
        assert everywhere.status_code == 200
        statuses = await _settled(second, [phone, laptop])
    assert statuses == [401, 401]


async def _settled(harness: Harness, raw_ids: list[str]) -> list[int]:
    """The statuses of a call with each session, once none answers 200 (or after a second)."""
    deadline = time.monotonic() + 1.0
    while True:
        statuses = [
            (await harness.browser_with(raw_id).api("GET", FLOWS)).status_code for raw_id in raw_ids
        ]
        if 200 not in statuses or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.01)


def _store(redis: Redis, near: NearCache, **kwargs: Any) -> RedisSessionStore:
    return RedisSessionStore(
        redis, ring=RING, idle_timeout=600, absolute_timeout=3600, near=near, **kwargs
    )


@pytest.fixture
def dead_redis() -> Iterator[Redis]:
    """A Redis client whose server accepts connections and never answers."""
    with silent_listener() as port:
        yield Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.2)


async def test_with_the_channel_down_no_copy_is_used(redis: Redis, dead_redis: Redis) -> None:
    from bff.state.health import RedisHealth

    async def outcome(channel: Redis) -> Session | None:
        near = NearCache(ttl=300, max_entries=100)
        invalidation = RedisInvalidation(
            channel, lambda tenant, cluster: None, health=RedisHealth(channel), retry_delay=0.05
        )
        invalidation.keep_current(near)
        listener = asyncio.create_task(invalidation.listen())
        try:
            store = _store(redis, near, announce=invalidation.sessions_changed, touch_interval=30)
            raw_id = await store.create(Session(sub="alice"))
            await asyncio.sleep(0.3)  # subscribed by now, if it can be
            assert await store.get(raw_id) is not None
            # Gone from Redis behind the store's back: no instance was told.
            await redis.delete(f"bff:session:{hash_session_id(raw_id)}")
            return await store.get(raw_id)
        finally:
            listener.cancel()

    assert await outcome(redis) is not None, "with the channel up, the copy answers"
    assert await outcome(dead_redis) is None, "with the channel down, Redis answers"


async def test_after_the_channel_comes_back_no_copy_from_before_is_used(
    redis: Redis, redis_server: RedisServer, upstream: respx.MockRouter, provider: FakeProvider
) -> None:
    settings = auth_settings(sessions=redis_sessions(redis_server.url, near_cache_seconds=300))
    async with running_instances(settings, upstream, provider, count=1) as (harness,):
        raw_id = await harness.login(harness.browser(), "alice")
        browser = harness.browser_with(raw_id)
        assert (await browser.api("GET", FLOWS)).status_code == 200
        # A message missed: the record goes while the channel is cut.
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await redis.delete(f"bff:session:{hash_session_id(raw_id)}")
        invalidation = harness.app.state.services.invalidation
        await asyncio.sleep(0.05)
        await asyncio.wait_for(invalidation.subscribed.wait(), timeout=5)
        answer = await browser.api("GET", FLOWS)
    assert answer.status_code == 401


async def test_activity_is_written_at_most_once_per_touch_interval(redis: Redis) -> None:
    clock = FakeClock()
    near = NearCache(ttl=300, max_entries=100)
    near.reset(usable=True)
    store = _store(redis, near, clock=clock, touch_interval=30)
    raw_id = await store.create(Session(sub="alice"))
    key = f"bff:session:{hash_session_id(raw_id)}"
    created = float(await redis.hget(key, "seen"))  # type: ignore[misc]
    seen = []
    for _ in range(7):  # a call every 10 s for a minute
        clock.advance(10)
        assert await store.get(raw_id) is not None
        seen.append(float(await redis.hget(key, "seen")))  # type: ignore[misc]
    written = sorted(set(seen) - {created})
    assert written == [created + 30, created + 60], seen
    ttl = await redis.pttl(key)
    assert ttl > (600 - 10) * 1000, "the idle expiry slid with the last write"


async def test_concurrent_misses_of_one_session_read_redis_once(redis: Redis) -> None:
    near = NearCache(ttl=300, max_entries=100)
    near.reset(usable=True)
    store = _store(redis, near, touch_interval=30)
    raw_id = await store.create(Session(sub="alice"))

    async def reads() -> int:
        stats = await redis.info("commandstats")
        return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))

    before = await reads()
    sessions = await asyncio.gather(*(store.get(raw_id) for _ in range(20)))
    assert all(session is not None and session.sub == "alice" for session in sessions)
    assert len({id(session) for session in sessions}) == 20, "each caller its own copy"
    assert await reads() - before == 1


# --- one bounded wait ----------------------------------------------------------------------------


async def test_a_write_waits_for_an_absent_redis_once(upstream: respx.MockRouter) -> None:
    timeout = 0.5
    upstream.post(UP_FLOWS).respond(201, json=_flow(), headers={"ETag": '"1"'})
    with silent_listener() as port:
        settings = make_settings(
            bff={"rate_limit_per_minute": 600},
            sessions=redis_sessions(f"redis://127.0.0.1:{port}/0", redis_timeout_seconds=timeout),
        )
        app = create_app(
            settings,
            authenticators=[static_authenticator(ALICE)],
            upstream_transport=httpx.MockTransport(upstream.async_handler),
            idp_transport=NO_IDP,
        )
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BFF) as client,
        ):
            took = []
            for _ in range(2):
                started = time.monotonic()
                answer = await client.post(FLOWS, json=_WRITE)
                took.append(time.monotonic() - started)
                assert answer.status_code == 201, answer.text
    # The rate limit waits once and falls back; telling the others does not wait again.
    assert took[0] < timeout * 1.5, took
    assert took[1] < timeout / 2, took


_WRITE = {"name": "n", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"}


def _flow() -> dict[str, Any]:
    from tests.support.gateway import upstream_flow

    return upstream_flow()


def test_a_test_ring_line_is_what_bff_keys_writes() -> None:
    key_id, key = new_key_line().split()
    assert re.fullmatch(r"[a-z0-9]{12}", key_id)
    assert len(base64.b64decode(key)) == 32
