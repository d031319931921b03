"""Server-side sessions: the record behind the browser's opaque session cookie.

The browser holds only a random session id. The store keys every record by a hash of that id
(`hash_session_id`), so a dump of the store cannot be replayed as cookies, and keeps the user's
tokens next to it. Two stores implement one protocol and pass one test suite:

- `MemorySessionStore`: a bounded, least-recently-used dict for a single process (development,
  tests, one-instance deployments).
- `RedisSessionStore`: `redis.asyncio`, shared by every BFF instance, with sid/sub indexes so a
  back-channel logout received by one instance ends the sessions everywhere; records sealed at
  rest, and a hot session answered from this instance's copy (near cache).

Both enforce the idle and absolute timeouts against an injectable clock on every `get` (Redis:
the idle one to within `touch_interval`); Redis TTLs only collect garbage. Errors: the stores
raise no exceptions of their own. A Redis outage surfaces as `redis.exceptions.RedisError` from
the call that needed Redis; `ping()` reports it as `False`. Both announce every change or end
of a session (`Announce`; an end says why, `Ending`), which the event streams of
`GET /auth/session/events` follow.

Longer than the other stores (about 700 lines) on purpose: the record, its id rules, the timeout
policy and both backends stay side by side, because the two backends must agree on every one of
them and are read against each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol, runtime_checkable

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .near_cache import Copy, NearCache
from .sealing import KeyRing, Unsealable

Ending = Literal[
    "signed-out",
    "signed-out-everywhere",
    "revoked",
    "backchannel-logout",
    "refresh-refused",
    "signed-in-again",
    "expired",
    "unknown",
]
"""Why a session ended: its browser signed out (``POST /auth/logout``), the user signed out
everywhere, the user ended it from their list of sessions, the provider ended it (back-channel
logout), the provider refused to renew its tokens, its browser signed in again (a new session
replaces it), it timed out; ``unknown`` when it is gone and nobody said why (a record that can no
longer be read, or an announcement missed while the invalidation channel was down)."""

Announce = Callable[[list[str], Ending | None], Awaitable[None]]
"""Tells every instance that the sessions of these handles changed (``None``), or ended and why."""

__all__ = [
    "Ending",
    "MemorySessionStore",
    "RedisSessionStore",
    "Session",
    "SessionStore",
    "hash_session_id",
    "new_session_id",
]

# 32 random bytes: 256 bits. RFC 6749 10.10 asks that guessing a credential be at most 2^-128
# likely; the OWASP Session Management Cheat Sheet, at least 64 bits of entropy in a session id.
_SESSION_ID_BYTES = 32
# Anything outside this shape is not an id we issued; reject it before touching the store.
_SESSION_ID_SHAPE = re.compile(r"^[A-Za-z0-9_-]{22,128}$")
_REDACTED = "<redacted>"
_HANDLE_SHAPE = re.compile(r"^[0-9a-f]{64}$")


class Session(msgspec.Struct, kw_only=True):
    """One signed-in browser: who the user is, what they may do, and their tokens.

    `created_at` and `last_seen_at` are stamped by the store (`create`, `get`, `save`) with its
    clock. `repr()` never shows a token.
    """

    sub: str
    name: str | None = None
    email: str | None = None
    tenants: dict[str, list[str]] = msgspec.field(default_factory=dict)
    id_token: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    access_expires_at: float | None = None
    access_lifetime: float | None = None
    """What the access token was good for when issued: the refresh margin scales to it."""
    dpop_key: str | None = None
    """With ``[oidc].dpop``: the private JWK the tokens are bound to (RFC 9449)."""
    auth_time: float | None = None
    """When the user last authenticated at the provider (the ID token's ``auth_time``)."""
    acr: str | None = None
    """How they authenticated (the ID token's ``acr``), for a step-up before a sensitive action."""
    sid: str | None = None
    user_agent: str | None = None
    """The browser that signed in (its ``User-Agent``, bounded), so the user can tell sessions
    apart when they list them."""
    created_at: float = 0.0
    last_seen_at: float = 0.0

    def __repr__(self) -> str:
        # Sessions end up in logs and tracebacks; tokens must not.
        def secret(value: str | None) -> str:
            return "None" if value is None else _REDACTED

        return (
            f"Session(sub={self.sub!r}, name={self.name!r}, email={self.email!r}, "
            f"tenants={self.tenants!r}, id_token={secret(self.id_token)}, "
            f"access_token={secret(self.access_token)}, "
            f"refresh_token={secret(self.refresh_token)}, dpop_key={secret(self.dpop_key)}, "
            f"access_expires_at={self.access_expires_at!r}, sid={self.sid!r}, "
            f"created_at={self.created_at!r}, last_seen_at={self.last_seen_at!r})"
        )

    __str__ = __repr__


def new_session_id() -> str:
    """Return a fresh, unguessable session id (256 bits from `secrets`, URL-safe base64)."""
    return secrets.token_urlsafe(_SESSION_ID_BYTES)


def hash_session_id(raw_id: str) -> str:
    """Return the store key for a raw session id: its SHA-256, in hex."""
    return hashlib.sha256(raw_id.encode("utf-8")).hexdigest()


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions live. Every method is safe to call concurrently."""

    idle_timeout: float
    absolute_timeout: float

    async def create(self, session: Session) -> str:
        """Store a new session stamped with the current time; return its new raw id."""
        ...

    async def get(self, raw_id: str, *, fresh: bool = False) -> Session | None:
        """Return the live session for a raw id and slide its idle expiry.

        Returns None for an unknown, malformed or timed-out id; a timed-out record is deleted.
        ``fresh``: read the shared record, not a copy this instance may keep (before a refresh).
        """
        ...

    async def save(self, raw_id: str, session: Session) -> bool:
        """Replace the record (after a token refresh); counts as activity.

        Returns False, and stores nothing, when the session no longer exists: a logout that
        raced a refresh stays a logout.
        """
        ...

    async def delete(self, raw_id: str, *, ending: Ending = "unknown") -> None:
        """Delete the session for a raw id (no error when it is already gone).

        Every delete says why the session ends (``ending``): it is announced with it, to the
        event streams that follow the session on every instance."""
        ...

    async def delete_by_sid(self, sid: str, *, ending: Ending = "unknown") -> int:
        """Delete every session of one IdP session (`sid`); return how many were deleted."""
        ...

    async def delete_by_sub(self, sub: str, *, ending: Ending = "unknown") -> int:
        """Delete every session of one user (`sub`); return how many were deleted."""
        ...

    def handle(self, raw_id: str) -> str | None:
        """The public name of a session: the hash its record is stored under, never the id
        itself. None for something that is not an id we issue."""
        ...

    async def sessions_of(self, sub: str) -> list[tuple[str, Session]]:
        """Every live session of one user with its handle, the most recently used first."""
        ...

    async def delete_handle(
        self, sub: str, handle: str, *, ending: Ending = "unknown"
    ) -> Session | None:
        """Delete one session of this user by handle; what it was, or None when the user has
        no such session (another user's handle is no exception)."""
        ...

    def expires_at(self, session: Session) -> float:
        """When the session ends without further activity (the earlier of both timeouts)."""
        ...

    async def count(self) -> int:
        """How many sessions are live (the ``bff_sessions_active`` gauge)."""
        ...

    async def ping(self) -> bool:
        """True when the store is reachable (for `/readyz`)."""
        ...


class _Timeouts:
    """The timeout policy both stores share."""

    def __init__(
        self, idle_timeout: float, absolute_timeout: float, clock: Callable[[], float]
    ) -> None:
        if idle_timeout <= 0 or absolute_timeout <= 0:
            raise ValueError("session timeouts must be positive")
        self.idle_timeout = float(idle_timeout)
        self.absolute_timeout = float(absolute_timeout)
        self._clock = clock

    def expires_at(self, session: Session) -> float:
        """When the session ends without further activity (the earlier of both timeouts)."""
        return min(
            session.last_seen_at + self.idle_timeout,
            session.created_at + self.absolute_timeout,
        )

    def _is_expired(self, session: Session, now: float) -> bool:
        return now >= self.expires_at(session)

    def _ttl_from(self, session: Session, now: float) -> float:
        """Seconds the record must survive after activity at `now`."""
        return min(self.idle_timeout, session.created_at + self.absolute_timeout - now)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Session)


class MemorySessionStore(_Timeouts):
    """Sessions in this process: a dict bounded to `max_size`, least recently used evicted first.

    Records are kept encoded, so callers never share mutable state with the store; the last
    activity is kept beside them, so that a lookup, which slides it, does not encode anything.
    Every change or end of a session is `announce`d, as in Redis, for this process's event
    streams.
    """

    def __init__(
        self,
        *,
        idle_timeout: float,
        absolute_timeout: float,
        clock: Callable[[], float] = time.time,
        max_size: int = 100_000,
        announce: Announce | None = None,
    ) -> None:
        super().__init__(idle_timeout, absolute_timeout, clock)
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._announce = announce
        self._records: OrderedDict[str, bytes] = OrderedDict()
        self._seen: dict[str, float] = {}
        self._by_sid: dict[str, set[str]] = {}
        self._by_sub: dict[str, set[str]] = {}

    def handle(self, raw_id: str) -> str | None:
        """The hash the session is stored under; None for something that is not an id."""
        if not _SESSION_ID_SHAPE.match(raw_id):
            return None
        return hash_session_id(raw_id)

    def _index(self, key: str, session: Session) -> None:
        self._by_sub.setdefault(session.sub, set()).add(key)
        if session.sid is not None:
            self._by_sid.setdefault(session.sid, set()).add(key)

    def _unindex(self, index: dict[str, set[str]], value: str | None, key: str) -> None:
        if value is None:
            return
        keys = index.get(value)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del index[value]

    def _decode(self, key: str, data: bytes) -> Session:
        session = _decoder.decode(data)
        session.last_seen_at = self._seen[key]
        return session

    def _remove(self, key: str) -> bool:
        data = self._records.pop(key, None)
        if data is None:
            return False
        session = _decoder.decode(data)
        del self._seen[key]
        self._unindex(self._by_sub, session.sub, key)
        self._unindex(self._by_sid, session.sid, key)
        return True

    def _put(self, key: str, session: Session) -> None:
        old = self._records.get(key)
        if old is not None:
            previous = _decoder.decode(old)
            self._unindex(self._by_sub, previous.sub, key)
            self._unindex(self._by_sid, previous.sid, key)
        self._records[key] = _encoder.encode(session)
        self._seen[key] = session.last_seen_at
        self._records.move_to_end(key)
        self._index(key, session)
        while len(self._records) > self.max_size:
            oldest = next(iter(self._records))
            self._remove(oldest)

    async def create(self, session: Session) -> str:
        """Store a new session stamped with the current time; return its new raw id."""
        now = self._clock()
        raw_id = new_session_id()
        key = hash_session_id(raw_id)
        self._put(key, msgspec.structs.replace(session, created_at=now, last_seen_at=now))
        return raw_id

    async def get(self, raw_id: str, *, fresh: bool = False) -> Session | None:
        """Return the live session for a raw id and slide its idle expiry."""
        key = self.handle(raw_id)
        if key is None:
            return None
        data = self._records.get(key)
        if data is None:
            return None
        session = self._decode(key, data)
        now = self._clock()
        if self._is_expired(session, now):
            self._remove(key)
            return None
        session.last_seen_at = self._seen[key] = now
        self._records.move_to_end(key)
        return session

    async def save(self, raw_id: str, session: Session) -> bool:
        """Replace the record; False (and nothing stored) when the session is gone."""
        key = self.handle(raw_id)
        if key is None or key not in self._records:
            return False
        current = self._decode(key, self._records[key])
        now = self._clock()
        if self._is_expired(current, now):
            self._remove(key)
            return False
        # The creation time is the store's, not the caller's: the absolute timeout cannot slide.
        self._put(
            key,
            msgspec.structs.replace(session, created_at=current.created_at, last_seen_at=now),
        )
        await self._changed([key], None)
        return True

    async def _changed(self, keys: list[str], ending: Ending | None) -> None:
        if keys and self._announce is not None:
            await self._announce(keys, ending)

    async def _delete_all(self, keys: list[str], ending: Ending) -> int:
        deleted = [key for key in keys if self._remove(key)]
        await self._changed(deleted, ending)
        return len(deleted)

    async def delete(self, raw_id: str, *, ending: Ending = "unknown") -> None:
        """Delete the session for a raw id (no error when it is already gone)."""
        key = self.handle(raw_id)
        if key is not None:
            await self._delete_all([key], ending)

    async def delete_by_sid(self, sid: str, *, ending: Ending = "unknown") -> int:
        """Delete every session of one IdP session; return how many were deleted."""
        return await self._delete_all(list(self._by_sid.get(sid, ())), ending)

    async def delete_by_sub(self, sub: str, *, ending: Ending = "unknown") -> int:
        """Delete every session of one user; return how many were deleted."""
        return await self._delete_all(list(self._by_sub.get(sub, ())), ending)

    async def sessions_of(self, sub: str) -> list[tuple[str, Session]]:
        """Every live session of one user with its handle, the most recently used first."""
        now = self._clock()
        found: list[tuple[str, Session]] = []
        for key in list(self._by_sub.get(sub, ())):
            session = self._decode(key, self._records[key])
            if self._is_expired(session, now):
                self._remove(key)
            else:
                found.append((key, session))
        return _most_recent_first(found)

    async def delete_handle(
        self, sub: str, handle: str, *, ending: Ending = "unknown"
    ) -> Session | None:
        """Delete one session of this user by handle; what it was, or None."""
        if handle not in self._by_sub.get(sub, ()):
            return None
        session = self._decode(handle, self._records[handle])
        await self._delete_all([handle], ending)
        return None if self._is_expired(session, self._clock()) else session

    async def count(self) -> int:
        """Live sessions; timed-out records found on the way are dropped."""
        now = self._clock()
        expired = [
            key
            for key, data in self._records.items()
            if self._is_expired(self._decode(key, data), now)
        ]
        for key in expired:
            self._remove(key)
        return len(self._records)

    async def ping(self) -> bool:
        """Always True: memory is always reachable."""
        return True


# Touch: update last-seen and expiry only if the record still exists, so a slide can never
# resurrect a deleted session, and only the "seen" field, so it can never overwrite tokens
# that a concurrent refresh just saved.
_TOUCH_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'seen', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# Save: replace the record only if it still exists (a logout that raced a refresh wins).
_SAVE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 's', ARGV[1], 'seen', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[4])
  redis.call('PEXPIRE', KEYS[i], ARGV[5])
end
return 1
"""

# Delete every member of an index set and the set itself; return how many records existed,
# then the members (so every instance can drop its copies of them).
_DELETE_INDEX_SCRIPT = """
local members = redis.call('SMEMBERS', KEYS[1])
local deleted = 0
for _, member in ipairs(members) do
  deleted = deleted + redis.call('DEL', ARGV[1] .. member)
end
redis.call('DEL', KEYS[1])
table.insert(members, 1, deleted)
return members
"""


def _most_recent_first(found: list[tuple[str, Session]]) -> list[tuple[str, Session]]:
    return sorted(found, key=lambda item: (-item[1].last_seen_at, item[0]))


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisSessionStore(_Timeouts):
    """Sessions in Redis, shared by every BFF instance, sealed at rest.

    Layout under `prefix` (default `bff:session:`):

    - `<prefix><hash>`: a hash with `s` (the msgpack-encoded `Session`, sealed by `ring` with the
      key's name as associated data, :mod:`bff.state.sealing`) and `seen` (last activity);
      expires after min(idle timeout, absolute time left).
    - `<prefix>sid:<digest>` and `<prefix>sub:<digest>`: sets of record hashes, for back-channel
      logout and "sign out everywhere"; the sid and sub are hashed, so no key names a person.

    A hot session costs no round trip: with `near` (:class:`bff.state.near_cache.NearCache`) the
    record is answered from this instance's copy, and its activity is written at most once per
    `touch_interval` (the idle expiry is exact to within that). Every change or end of a session
    is `announce`d (an end with why), so every instance drops its copy and tells the event
    streams that follow it. ``fresh=True`` reads Redis whatever the copy
    (a token refresh, under its lock).

    ``redis`` is the caller's client, which the caller closes (:func:`bff.state.open_stores`
    builds it on a ``BlockingConnectionPool``, so a burst waits for a connection rather than
    failing once the pool is exhausted).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        ring: KeyRing,
        idle_timeout: float,
        absolute_timeout: float,
        clock: Callable[[], float] = time.time,
        prefix: str = "bff:session:",
        near: NearCache | None = None,
        touch_interval: float = 0.0,
        announce: Announce | None = None,
    ) -> None:
        super().__init__(idle_timeout, absolute_timeout, clock)
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            # Records are msgpack bytes; a decoding client would corrupt them.
            raise ValueError("RedisSessionStore needs a client with decode_responses=False")
        self._redis = redis
        self._ring = ring
        self.prefix = prefix
        self._near = near
        self._touch_interval = touch_interval
        self._announce = announce
        self._reading: dict[tuple[str, int], asyncio.Future[Session | None]] = {}
        self._touch = self._redis.register_script(_TOUCH_SCRIPT)
        self._save = self._redis.register_script(_SAVE_SCRIPT)
        self._delete_index = self._redis.register_script(_DELETE_INDEX_SCRIPT)

    def _record_key(self, digest: str) -> str:
        return f"{self.prefix}{digest}"

    def _sub_key(self, sub: str) -> str:
        return f"{self.prefix}sub:{_digest(sub)}"

    def _index_keys(self, session: Session) -> list[str]:
        keys = [self._sub_key(session.sub)]
        if session.sid is not None:
            keys.append(f"{self.prefix}sid:{_digest(session.sid)}")
        return keys

    def handle(self, raw_id: str) -> str | None:
        """The hash the session is stored under; None for something that is not an id."""
        if not _SESSION_ID_SHAPE.match(raw_id):
            return None
        return hash_session_id(raw_id)

    def _sealed(self, key: str, session: Session) -> bytes:
        return self._ring.seal(_encoder.encode(session), key.encode())

    async def create(self, session: Session) -> str:
        """Store a new session stamped with the current time; return its new raw id."""
        now = self._clock()
        session = msgspec.structs.replace(session, created_at=now, last_seen_at=now)
        raw_id = new_session_id()
        digest = hash_session_id(raw_id)
        key = self._record_key(digest)
        ttl_ms = _ms(self._ttl_from(session, now))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"s": self._sealed(key, session), "seen": repr(now)})
            pipe.pexpire(key, ttl_ms)
            for index_key in self._index_keys(session):
                pipe.sadd(index_key, digest)
                # An index lives as long as the longest session it could point at.
                pipe.pexpire(index_key, _ms(self.absolute_timeout))
            await pipe.execute()
        return raw_id

    async def _load(self, key: str) -> Session | None:
        fields: dict[bytes, bytes] = await self._redis.hgetall(key)  # type: ignore[assignment]
        data, seen = fields.get(b"s"), fields.get(b"seen")
        if data is None or seen is None:
            return None
        try:
            session = _decoder.decode(self._ring.open(data, key.encode()))
            session.last_seen_at = float(seen)
        except Unsealable as exc:
            if exc.unknown_key:
                # Sealed with a key this instance's ring lacks (a newer ring elsewhere): the
                # session has ended here; the record stays for the instances that hold the key.
                return None
            await self._redis.delete(key)  # moved, altered or not sealed: nobody can open it
            return None
        except (msgspec.DecodeError, ValueError):
            # A record this version cannot read (corrupt or from an incompatible release) is
            # treated as logged out rather than as a server error on every request.
            await self._redis.delete(key)
            return None
        return session

    async def get(self, raw_id: str, *, fresh: bool = False) -> Session | None:
        """Return the live session for a raw id and slide its idle expiry."""
        digest = self.handle(raw_id)
        if digest is None:
            return None
        now = self._clock()
        near = self._near
        if near is not None and not fresh and (copy := near.get(digest, now)) is not None:
            if not self._is_expired(copy.session, now):
                return await self._from_copy(digest, copy, now)
            near.drop((digest,))
        if near is None or fresh:
            return await self._read(digest, now, near)
        # Concurrent misses of one session (its copy just expired) share one read of Redis; a
        # read begun before a drop is not shared after it (the drop count is in the key).
        key = (digest, near.mark())
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read(digest, now, near))
            self._reading[key] = reading
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        session = await asyncio.shield(reading)
        return None if session is None else msgspec.structs.replace(session)

    async def _read(self, digest: str, now: float, near: NearCache | None) -> Session | None:
        """The record from Redis, its activity written when due, and a copy kept."""
        mark = near.mark() if near is not None else 0
        key = self._record_key(digest)
        session = await self._load(key)
        if session is None:
            return None
        if self._is_expired(session, now):
            await self._redis.delete(key)
            return None
        written_at = session.last_seen_at  # the activity Redis has
        if now - written_at >= self._touch_interval:
            if not await self._touched(key, session, now):
                return None
            written_at = now
        session.last_seen_at = now
        if near is not None:
            near.put(digest, Copy(msgspec.structs.replace(session), now, written_at), mark)
        return session

    async def _from_copy(self, digest: str, copy: Copy, now: float) -> Session | None:
        """The session as this instance's copy has it; its activity written when it is due."""
        if now - copy.touched_at >= self._touch_interval:
            if not await self._touched(self._record_key(digest), copy.session, now):
                if self._near is not None:
                    self._near.drop((digest,))
                return None
            copy.touched_at = now
        copy.session.last_seen_at = now
        return msgspec.structs.replace(copy.session)

    async def _touched(self, key: str, session: Session, now: float) -> bool:
        touched = await self._touch(keys=[key], args=[repr(now), _ms(self._ttl_from(session, now))])
        return bool(touched)

    async def _changed(self, digests: list[str], ending: Ending | None = None) -> None:
        if self._near is not None:
            self._near.drop(digests)
        if digests and self._announce is not None:
            await self._announce(digests, ending)

    async def save(self, raw_id: str, session: Session) -> bool:
        """Replace the record; False (and nothing stored) when the session is gone."""
        digest = self.handle(raw_id)
        if digest is None:
            return False
        key = self._record_key(digest)
        current = await self._load(key)
        if current is None:
            return False
        now = self._clock()
        if self._is_expired(current, now):
            await self._redis.delete(key)
            return False
        session = msgspec.structs.replace(session, created_at=current.created_at, last_seen_at=now)
        saved = await self._save(
            keys=[key, *self._index_keys(session)],
            args=[
                self._sealed(key, session),
                repr(now),
                _ms(self._ttl_from(session, now)),
                digest,
                _ms(self.absolute_timeout),
            ],
        )
        await self._changed([digest])
        return bool(saved)

    async def delete(self, raw_id: str, *, ending: Ending = "unknown") -> None:
        """Delete the session for a raw id (no error when it is already gone)."""
        digest = self.handle(raw_id)
        if digest is not None:
            await self._redis.delete(self._record_key(digest))
            await self._changed([digest], ending)

    async def _delete_indexed(self, index_key: str, ending: Ending) -> int:
        deleted, *digests = await self._delete_index(keys=[index_key], args=[self.prefix])
        await self._changed([_text(digest) for digest in digests], ending)
        return int(deleted)

    async def delete_by_sid(self, sid: str, *, ending: Ending = "unknown") -> int:
        """Delete every session of one IdP session; return how many were deleted."""
        return await self._delete_indexed(f"{self.prefix}sid:{_digest(sid)}", ending)

    async def delete_by_sub(self, sub: str, *, ending: Ending = "unknown") -> int:
        """Delete every session of one user; return how many were deleted."""
        return await self._delete_indexed(self._sub_key(sub), ending)

    async def sessions_of(self, sub: str) -> list[tuple[str, Session]]:
        """Every live session of one user with its handle, the most recently used first.

        Index entries whose record has expired are dropped on the way.
        """
        index_key = self._sub_key(sub)
        members = await self._redis.smembers(index_key)
        now = self._clock()
        found: list[tuple[str, Session]] = []
        gone: list[bytes | str] = []
        for member in members:
            digest = _text(member)
            session = await self._load(self._record_key(digest))
            if session is None or session.sub != sub or self._is_expired(session, now):
                gone.append(member)
            else:
                found.append((digest, session))
        if gone:
            await self._redis.srem(index_key, *gone)
        return _most_recent_first(found)

    async def delete_handle(
        self, sub: str, handle: str, *, ending: Ending = "unknown"
    ) -> Session | None:
        """Delete one session of this user by handle; what it was, or None."""
        if not _HANDLE_SHAPE.match(handle):
            return None
        key = self._record_key(handle)
        session = await self._load(key)
        if session is None or session.sub != sub:
            return None
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            for index_key in self._index_keys(session):
                pipe.srem(index_key, handle)
            deleted, *_ = await pipe.execute()
        await self._changed([handle], ending)
        if not deleted or self._is_expired(session, self._clock()):
            return None
        return session

    async def count(self) -> int:
        """Live session records (Redis expires the others), counted with SCAN."""
        total = 0
        async for _ in self._redis.scan_iter(match=f"{self.prefix}*", count=1000, _type="HASH"):
            total += 1
        return total

    async def ping(self) -> bool:
        """True when Redis answers PING."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False


def _digest(value: str) -> str:
    """A sub or sid as an index key names it: hashed, so that no key names a person."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
