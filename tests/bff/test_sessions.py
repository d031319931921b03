"""One suite for every session store: memory and a real Redis on loopback."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from bff.state.sessions import (
    MemorySessionStore,
    RedisSessionStore,
    Session,
    SessionStore,
    hash_session_id,
    new_session_id,
)
from tests.support.clock import START, FakeClock
from tests.support.keys import RING
from tests.support.redis import RedisServer

IDLE = 600.0
ABSOLUTE = 3600.0
PREFIX = "test:session:"


def make_session(sub: str = "alice", sid: str | None = "sid-1", **overrides: object) -> Session:
    fields: dict[str, object] = {
        "sub": sub,
        "name": "Alice Admin",
        "email": "alice@example.test",
        "tenants": {"ten_acme": ["read:delivery-flows", "write:delivery-flows"]},
        "id_token": "idtok-SECRET-1",
        "access_token": "access-SECRET-1",
        "refresh_token": "refresh-SECRET-1",
        "access_expires_at": START + 300,
        "sid": sid,
    }
    fields.update(overrides)
    return Session(**fields)  # type: ignore[arg-type]


class StoreHarness:
    """A store plus a way to look at what it physically holds."""

    def __init__(self, store: SessionStore, clock: FakeClock, redis: Redis | None) -> None:
        self.store = store
        self.clock = clock
        self.redis = redis

    async def raw_contents(self) -> list[bytes]:
        """Every key and value the store holds, as bytes."""
        if self.redis is None:
            assert isinstance(self.store, MemorySessionStore)
            blobs: list[bytes] = []
            for key, value in self.store._records.items():
                blobs += [key.encode(), value]
            for index in (self.store._by_sid, self.store._by_sub):
                for name, members in index.items():
                    blobs += [name.encode(), *(m.encode() for m in members)]
            return blobs
        blobs = []
        async for key in self.redis.scan_iter(match=f"{PREFIX}*"):
            blobs.append(key)
            kind = await self.redis.type(key)
            if kind == b"hash":
                blobs += list((await self.redis.hgetall(key)).values())  # type: ignore[misc]
            elif kind == b"set":
                blobs += list(await self.redis.smembers(key))  # type: ignore[misc]
        return blobs

    async def record_keys(self) -> set[str]:
        """The keys under which session records (not indexes) are stored."""
        if self.redis is None:
            assert isinstance(self.store, MemorySessionStore)
            return set(self.store._records)
        keys = set()
        async for key in self.redis.scan_iter(match=f"{PREFIX}*"):
            name = key.decode()[len(PREFIX) :]
            if ":" not in name:
                keys.add(name)
        return keys


def blocking_client(url: str) -> Redis:
    return Redis.from_pool(BlockingConnectionPool.from_url(url, max_connections=20))


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[StoreHarness]:
    clock = FakeClock()
    if request.param == "memory":
        yield StoreHarness(
            MemorySessionStore(idle_timeout=IDLE, absolute_timeout=ABSOLUTE, clock=clock),
            clock,
            None,
        )
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = blocking_client(server.url)
    await client.flushdb()
    store = RedisSessionStore(
        client, ring=RING, idle_timeout=IDLE, absolute_timeout=ABSOLUTE, clock=clock, prefix=PREFIX
    )
    try:
        yield StoreHarness(store, clock, client)
    finally:
        await client.flushdb()
        await client.aclose()


def test_session_ids_are_long_random_and_url_safe() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    for raw in ids:
        # 32 bytes of entropy encode to 43 URL-safe characters.
        assert len(raw) >= 43
        assert set(raw) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_hash_session_id_is_sha256_hex() -> None:
    digest = hash_session_id("abc")
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_repr_and_str_never_show_tokens() -> None:
    session = make_session()
    for text in (repr(session), str(session), f"{session}", repr([session])):
        assert "SECRET" not in text
        assert "alice" in text and "<redacted>" in text
    assert "id_token=None" in repr(make_session(id_token=None))


def test_stores_satisfy_the_protocol() -> None:
    store = MemorySessionStore(idle_timeout=1, absolute_timeout=2)
    assert isinstance(store, SessionStore)


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemorySessionStore(idle_timeout=0, absolute_timeout=10)


def test_redis_store_refuses_a_decoding_client() -> None:
    client = Redis(decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        RedisSessionStore(client, ring=RING, idle_timeout=1, absolute_timeout=2)


async def test_create_then_get_returns_the_session_stamped_by_the_store(
    harness: StoreHarness,
) -> None:
    raw_id = await harness.store.create(make_session(created_at=1.0, last_seen_at=2.0))
    session = await harness.store.get(raw_id)
    assert session is not None
    assert session.sub == "alice"
    assert session.name == "Alice Admin"
    assert session.tenants == {"ten_acme": ["read:delivery-flows", "write:delivery-flows"]}
    assert session.refresh_token == "refresh-SECRET-1"
    assert session.sid == "sid-1"
    assert session.created_at == START
    assert session.last_seen_at == START
    assert harness.store.expires_at(session) == START + IDLE


async def test_each_create_returns_a_new_id(harness: StoreHarness) -> None:
    first = await harness.store.create(make_session())
    second = await harness.store.create(make_session())
    assert first != second
    assert await harness.store.get(first) is not None
    assert await harness.store.get(second) is not None


async def test_unknown_and_malformed_ids_get_nothing(harness: StoreHarness) -> None:
    await harness.store.create(make_session())
    assert await harness.store.get(new_session_id()) is None
    for bogus in ("", "short", "x" * 500, "../../etc/passwd", "a b c d e f g h i j k l m n"):
        assert await harness.store.get(bogus) is None
        assert await harness.store.save(bogus, make_session()) is False
        await harness.store.delete(bogus)


async def test_store_never_holds_the_raw_id(harness: StoreHarness) -> None:
    raw_id = await harness.store.create(make_session())
    await harness.store.get(raw_id)
    assert await harness.store.save(raw_id, make_session(refresh_token="refresh-SECRET-2"))
    blobs = await harness.raw_contents()
    assert blobs, "the store should hold something"
    assert not any(raw_id.encode() in blob for blob in blobs)
    assert await harness.record_keys() == {hash_session_id(raw_id)}


async def test_save_replaces_tokens_and_keeps_creation_time(harness: StoreHarness) -> None:
    raw_id = await harness.store.create(make_session())
    harness.clock.advance(100)
    refreshed = make_session(
        access_token="access-SECRET-2",
        refresh_token="refresh-SECRET-2",
        access_expires_at=START + 400,
        created_at=START + 99_999,  # a caller cannot extend the absolute timeout
    )
    assert await harness.store.save(raw_id, refreshed) is True
    session = await harness.store.get(raw_id)
    assert session is not None
    assert session.access_token == "access-SECRET-2"
    assert session.refresh_token == "refresh-SECRET-2"
    assert session.access_expires_at == START + 400
    assert session.created_at == START


async def test_save_after_delete_does_not_resurrect(harness: StoreHarness) -> None:
    raw_id = await harness.store.create(make_session())
    await harness.store.delete(raw_id)
    assert await harness.store.save(raw_id, make_session()) is False
    assert await harness.store.get(raw_id) is None


async def test_delete_ends_the_session_and_is_idempotent(harness: StoreHarness) -> None:
    raw_id = await harness.store.create(make_session())
    other = await harness.store.create(make_session())
    await harness.store.delete(raw_id)
    await harness.store.delete(raw_id)
    assert await harness.store.get(raw_id) is None
    assert await harness.store.get(other) is not None


async def test_idle_timeout(harness: StoreHarness) -> None:
    raw_id = await harness.store.create(make_session())
    harness.clock.advance(IDLE - 1)
    assert await harness.store.get(raw_id) is not None
    harness.clock.advance(IDLE)
    assert await harness.store.get(raw_id) is None
    assert await harness.record_keys() == set(), "an expired record is deleted"
    harness.clock.advance(-IDLE)
    assert await harness.store.get(raw_id) is None, "and stays deleted"


async def test_activity_slides_the_idle_expiry(harness: StoreHarness) -> None:
    raw_id = await harness.store.create(make_session())
    for _ in range(5):
        harness.clock.advance(IDLE * 0.8)
        session = await harness.store.get(raw_id)
        assert session is not None
        assert session.last_seen_at == harness.clock.now
        assert harness.store.expires_at(session) == harness.clock.now + IDLE
    # Four idle periods have passed in total: only sliding kept it alive.
    assert harness.clock.now - START > IDLE * 3


async def test_save_counts_as_activity(harness: StoreHarness) -> None:
    raw_id = await harness.store.create(make_session())
    harness.clock.advance(IDLE * 0.8)
    assert await harness.store.save(raw_id, make_session())
    harness.clock.advance(IDLE * 0.8)
    assert await harness.store.get(raw_id) is not None


async def test_save_of_an_idle_expired_session_fails(harness: StoreHarness) -> None:
    raw_id = await harness.store.create(make_session())
    harness.clock.advance(IDLE + 1)
    assert await harness.store.save(raw_id, make_session()) is False
    assert await harness.store.get(raw_id) is None


async def test_absolute_timeout_ends_even_an_active_session(harness: StoreHarness) -> None:
    raw_id = await harness.store.create(make_session())
    step = IDLE / 2
    while harness.clock.now + step < START + ABSOLUTE:
        harness.clock.advance(step)
        session = await harness.store.get(raw_id)
        assert session is not None
        assert harness.store.expires_at(session) <= START + ABSOLUTE
    harness.clock.now = START + ABSOLUTE
    assert await harness.store.get(raw_id) is None


async def test_delete_by_sid_ends_only_that_idp_session(harness: StoreHarness) -> None:
    a1 = await harness.store.create(make_session(sid="sid-a"))
    a2 = await harness.store.create(make_session(sid="sid-a"))
    b = await harness.store.create(make_session(sid="sid-b"))
    assert await harness.store.delete_by_sid("sid-a") == 2
    assert await harness.store.get(a1) is None
    assert await harness.store.get(a2) is None
    assert await harness.store.get(b) is not None
    assert await harness.store.delete_by_sid("sid-a") == 0
    assert await harness.store.delete_by_sid("never-seen") == 0


async def test_delete_by_sub_ends_every_session_of_the_user(harness: StoreHarness) -> None:
    a1 = await harness.store.create(make_session(sub="alice", sid="sid-1"))
    a2 = await harness.store.create(make_session(sub="alice", sid=None))
    bob = await harness.store.create(make_session(sub="bob", sid="sid-2"))
    await harness.store.delete(a1)
    assert await harness.store.delete_by_sub("alice") == 1
    assert await harness.store.get(a2) is None
    assert await harness.store.get(bob) is not None
    assert await harness.store.delete_by_sub("alice") == 0
    assert await harness.store.delete_by_sid("sid-2") == 1


async def test_a_user_lists_their_live_sessions_most_recent_first(harness: StoreHarness) -> None:
    first = await harness.store.create(make_session(user_agent="Firefox"))
    harness.clock.advance(10)
    second = await harness.store.create(make_session(sid=None, user_agent="curl/8"))
    await harness.store.create(make_session(sub="bob"))
    harness.clock.advance(10)
    assert await harness.store.get(first) is not None  # used last: listed first

    listed = await harness.store.sessions_of("alice")

    assert [handle for handle, _ in listed] == [
        harness.store.handle(first),
        harness.store.handle(second),
    ]
    assert [s.user_agent for _, s in listed] == ["Firefox", "curl/8"]
    assert listed[0][1].last_seen_at == START + 20 and listed[1][1].created_at == START + 10
    assert await harness.store.sessions_of("nobody") == []


async def test_a_timed_out_session_is_not_listed(harness: StoreHarness) -> None:
    stale = await harness.store.create(make_session())
    harness.clock.advance(IDLE - 1)
    fresh = await harness.store.create(make_session())
    harness.clock.advance(2)
    listed = await harness.store.sessions_of("alice")
    assert [handle for handle, _ in listed] == [harness.store.handle(fresh)]
    assert await harness.store.get(stale) is None


async def test_a_handle_is_the_stored_hash_and_never_the_id(harness: StoreHarness) -> None:
    raw_id = await harness.store.create(make_session())
    handle = harness.store.handle(raw_id)
    assert handle == hash_session_id(raw_id) and handle != raw_id
    assert handle in await harness.record_keys()
    assert harness.store.handle("not an id!") is None


async def test_a_user_ends_one_of_their_sessions_by_handle(harness: StoreHarness) -> None:
    keep = await harness.store.create(make_session(sid="sid-1"))
    end = await harness.store.create(make_session(sid="sid-2", user_agent="old laptop"))
    handle = harness.store.handle(end)
    assert handle is not None

    ended = await harness.store.delete_handle("alice", handle)

    assert ended is not None and ended.user_agent == "old laptop"
    assert await harness.store.get(end) is None
    assert await harness.store.get(keep) is not None
    assert [h for h, _ in await harness.store.sessions_of("alice")] == [harness.store.handle(keep)]
    assert await harness.store.delete_handle("alice", handle) is None, "already gone"
    assert await harness.store.delete_by_sid("sid-2") == 0, "its index entries went with it"


async def test_nobody_ends_another_users_session_by_its_handle(harness: StoreHarness) -> None:
    bobs = await harness.store.create(make_session(sub="bob"))
    handle = harness.store.handle(bobs)
    assert handle is not None
    assert await harness.store.delete_handle("alice", handle) is None
    assert await harness.store.delete_handle("alice", "0" * 64) is None
    assert await harness.store.delete_handle("alice", "../../etc") is None
    assert await harness.store.get(bobs) is not None


async def test_sid_index_follows_a_save_that_changes_sid(harness: StoreHarness) -> None:
    raw_id = await harness.store.create(make_session(sid="sid-old"))
    assert await harness.store.save(raw_id, make_session(sid="sid-new"))
    assert await harness.store.delete_by_sid("sid-new") == 1
    assert await harness.store.get(raw_id) is None


async def test_returned_sessions_are_copies(harness: StoreHarness) -> None:
    raw_id = await harness.store.create(make_session())
    session = await harness.store.get(raw_id)
    assert session is not None
    session.tenants["ten_evil"] = ["admin:delivery-flows"]
    session.refresh_token = "mutated"
    again = await harness.store.get(raw_id)
    assert again is not None
    assert "ten_evil" not in again.tenants
    assert again.refresh_token == "refresh-SECRET-1"


async def test_concurrent_gets_never_undo_a_save(harness: StoreHarness) -> None:
    """A slow request sliding the expiry must not write back tokens a refresh replaced."""
    raw_ids = [await harness.store.create(make_session(sub=f"user{i}")) for i in range(10)]

    async def refresh(raw_id: str, n: int) -> None:
        assert await harness.store.save(
            raw_id, make_session(sub=f"user{n}", refresh_token=f"refresh-{n}-v2")
        )

    calls = []
    for n, raw_id in enumerate(raw_ids):
        calls += [harness.store.get(raw_id) for _ in range(20)]
        calls.insert(len(calls) - 10, refresh(raw_id, n))
    results = await asyncio.gather(*calls)
    assert sum(isinstance(r, Session) for r in results) == 200
    for n, raw_id in enumerate(raw_ids):
        session = await harness.store.get(raw_id)
        assert session is not None
        assert session.sub == f"user{n}"
        assert session.refresh_token == f"refresh-{n}-v2"


async def test_many_concurrent_creates_are_all_distinct(harness: StoreHarness) -> None:
    raw_ids = await asyncio.gather(*(harness.store.create(make_session()) for _ in range(200)))
    assert len(set(raw_ids)) == 200
    sessions = await asyncio.gather(*(harness.store.get(r) for r in raw_ids))
    assert all(s is not None for s in sessions)
    assert await harness.store.delete_by_sub("alice") == 200


async def test_ping(harness: StoreHarness) -> None:
    assert await harness.store.ping() is True


def test_memory_store_is_bounded_and_evicts_least_recently_used() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = MemorySessionStore(
            idle_timeout=IDLE, absolute_timeout=ABSOLUTE, clock=clock, max_size=3
        )
        first = await store.create(make_session(sid="s1"))
        second = await store.create(make_session(sid="s2"))
        third = await store.create(make_session(sid="s3"))
        assert await store.get(first) is not None  # first is now the most recently used
        fourth = await store.create(make_session(sid="s4"))
        assert await store.get(second) is None
        for raw_id in (first, third, fourth):
            assert await store.get(raw_id) is not None
        assert len(store._records) == 3
        assert "s2" not in store._by_sid, "an evicted session leaves no index entry"

    asyncio.run(scenario())


@pytest.mark.redis
async def test_redis_ttl_is_the_shorter_of_idle_and_absolute_left(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    client = blocking_client(redis_server.url)
    await client.flushdb()
    store = RedisSessionStore(
        client, ring=RING, idle_timeout=IDLE, absolute_timeout=ABSOLUTE, clock=clock, prefix=PREFIX
    )
    try:
        raw_id = await store.create(make_session())
        key = f"{PREFIX}{hash_session_id(raw_id)}"
        ttl = await client.pttl(key)
        assert IDLE * 1000 - 2000 < ttl <= IDLE * 1000
        clock.advance(ABSOLUTE - 60)
        # Keep it alive by hand so only the absolute limit is left.
        await client.hset(key, "seen", repr(clock.now - 1))  # type: ignore[misc]
        assert await store.get(raw_id) is not None
        ttl = await client.pttl(key)
        assert 58_000 < ttl <= 60_000
        # The index is named by the sid's hash: no key names a person.
        sid_digest = hashlib.sha256(b"sid-1").hexdigest()[:32]
        index_ttl = await client.pttl(f"{PREFIX}sid:{sid_digest}")
        assert 0 < index_ttl <= ABSOLUTE * 1000
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.mark.redis
async def test_redis_store_is_shared_between_instances(redis_server: RedisServer) -> None:
    clock = FakeClock()
    clients = blocking_client(redis_server.url), blocking_client(redis_server.url)
    one, two = (
        RedisSessionStore(
            client,
            ring=RING,
            idle_timeout=IDLE,
            absolute_timeout=ABSOLUTE,
            clock=clock,
            prefix=PREFIX,
        )
        for client in clients
    )
    try:
        raw_id = await one.create(make_session(sid="sid-shared"))
        assert await two.get(raw_id) is not None
        # Back-channel logout received by the other instance.
        assert await two.delete_by_sid("sid-shared") == 1
        assert await one.get(raw_id) is None
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.redis
async def test_redis_store_drops_unreadable_records(redis_server: RedisServer) -> None:
    client = blocking_client(redis_server.url)
    store = RedisSessionStore(
        client, ring=RING, idle_timeout=IDLE, absolute_timeout=ABSOLUTE, prefix=PREFIX
    )
    try:
        raw_id = new_session_id()
        key = f"{PREFIX}{hash_session_id(raw_id)}"
        await client.hset(key, mapping={"s": b"\xc1not msgpack", "seen": "1"})  # type: ignore[misc]
        assert await store.get(raw_id) is None
        assert await client.exists(key) == 0
    finally:
        await client.flushdb()
        await client.aclose()


async def test_redis_ping_is_false_when_unreachable() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    client = blocking_client("redis://127.0.0.1:1/0")
    store = RedisSessionStore(client, ring=RING, idle_timeout=IDLE, absolute_timeout=ABSOLUTE)
    try:
        assert await store.ping() is False
    finally:
        await client.aclose()
