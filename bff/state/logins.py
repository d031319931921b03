"""Login requests in flight between ``/auth/login`` and ``/auth/callback``.

The browser holds only a random handle in a short-lived cookie; ``state``, ``nonce`` and the PKCE
verifier stay here, keyed by a hash of that handle, and are taken out exactly once.

Anyone may start a sign-in, so the store is bounded without letting a flood push out the sign-ins
of others: at most ``per_client`` pending sign-ins per client address and ``total`` in all, each
for :data:`LOGIN_TTL` seconds. Past either bound a new sign-in is refused (``put`` says so); the
ones already pending are never evicted.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
from cachetools import TTLCache
from redis.asyncio import Redis

from .sealing import KeyRing, Unsealable

LOGIN_TTL = 600.0


class LoginRequest(msgspec.Struct, frozen=True):
    """What the callback needs to finish a login; kept server-side, never in the browser."""

    state: str
    nonce: str
    code_verifier: str
    return_to: str
    created_at: float
    silent: bool = False
    """Sent with ``prompt=none``: a refusal that needs the user falls back to a sign-in."""
    dpop_key: str | None = None
    """With ``[oidc].dpop``: the private JWK the sign-in's tokens are bound to (sealed at rest)."""

    def __repr__(self) -> str:  # the verifier and the key must never reach a log line
        return f"LoginRequest(return_to={self.return_to!r}, silent={self.silent!r})"


def _key(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


class LoginStore(Protocol):
    async def put(self, handle: str, login: LoginRequest, client: str) -> bool:
        """Keep ``login``; False (and nothing kept) when ``client`` or everyone has too many."""
        ...

    async def take(self, handle: str) -> LoginRequest | None:
        """Remove and return the login; a second take of the same handle returns None."""
        ...


class MemoryLoginStore:
    def __init__(
        self,
        *,
        ttl: float = LOGIN_TTL,
        total: int = 10_000,
        per_client: int = 20,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        # One more slot than the bound, so that the cache itself never has to evict.
        self._logins: TTLCache[str, LoginRequest] = TTLCache(
            maxsize=total + 1, ttl=ttl, timer=timer
        )
        self._by_client: TTLCache[str, list[float]] = TTLCache(
            maxsize=total + 1, ttl=ttl, timer=timer
        )
        self._ttl, self._total, self._per_client, self._timer = ttl, total, per_client, timer

    async def put(self, handle: str, login: LoginRequest, client: str) -> bool:
        now = self._timer()
        started = [at for at in self._by_client.get(client, []) if now - at < self._ttl]
        self._logins.expire()
        if len(started) >= self._per_client or len(self._logins) >= self._total:
            return False
        self._by_client[client] = [*started, now]
        self._logins[_key(handle)] = login
        return True

    async def take(self, handle: str) -> LoginRequest | None:
        return self._logins.pop(_key(handle), None)


class RedisLoginStore:
    """Shared by every instance, so the callback may land on another one than the login; each
    pending sign-in (its state, nonce, PKCE verifier) sealed by ``ring`` at rest.

    The bounds count sign-ins started per ``ttl`` window, per client and in all, across instances.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        ttl: float = LOGIN_TTL,
        total: int = 10_000,
        per_client: int = 20,
        ring: KeyRing,
        prefix: str = "bff:login:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._ring = ring
        self._ttl = ttl
        self._ttl_ms = int(ttl * 1000)
        self._total, self._per_client = total, per_client
        self._prefix = prefix
        self._clock = clock

    async def put(self, handle: str, login: LoginRequest, client: str) -> bool:
        window = int(self._clock() // self._ttl)
        client_key = f"{self._prefix}started:{window}:{_key(client)}"
        total_key = f"{self._prefix}started:{window}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(client_key)
            pipe.pexpire(client_key, 2 * self._ttl_ms)
            pipe.incr(total_key)
            pipe.pexpire(total_key, 2 * self._ttl_ms)
            from_client, _, in_all, _ = await pipe.execute()
        if int(from_client) > self._per_client or int(in_all) > self._total:
            return False
        key = self._prefix + _key(handle)
        sealed = self._ring.seal(msgspec.msgpack.encode(login), key.encode())
        await self._redis.set(key, sealed, px=self._ttl_ms)
        return True

    async def take(self, handle: str) -> LoginRequest | None:
        key = self._prefix + _key(handle)
        raw = await self._redis.getdel(key)
        if not isinstance(raw, bytes):
            return None
        try:
            return msgspec.msgpack.decode(self._ring.open(raw, key.encode()), type=LoginRequest)
        except (Unsealable, msgspec.DecodeError):
            return None  # as if it had expired: the user starts the sign-in again
