"""Login requests in flight between ``/auth/login`` and ``/auth/callback``.

The browser holds only a random handle in a short-lived cookie; ``state``, ``nonce`` and the PKCE
verifier stay here, keyed by a hash of that handle, and are taken out exactly once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
from cachetools import TTLCache
from redis.asyncio import Redis

from ..oidc import LoginRequest

LOGIN_TTL = 600.0


def _key(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


class LoginStore(Protocol):
    async def put(self, handle: str, login: LoginRequest) -> None: ...

    async def take(self, handle: str) -> LoginRequest | None:
        """Remove and return the login; a second take of the same handle returns None."""
        ...


class MemoryLoginStore:
    def __init__(
        self,
        *,
        ttl: float = LOGIN_TTL,
        maxsize: int = 50_000,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logins: TTLCache[str, LoginRequest] = TTLCache(maxsize=maxsize, ttl=ttl, timer=timer)

    async def put(self, handle: str, login: LoginRequest) -> None:
        self._logins[_key(handle)] = login

    async def take(self, handle: str) -> LoginRequest | None:
        return self._logins.pop(_key(handle), None)


class RedisLoginStore:
    """Shared by every instance, so the callback may land on another one than the login."""

    def __init__(self, redis: Redis, *, ttl: float = LOGIN_TTL, prefix: str = "bff:login:") -> None:
        self._redis = redis
        self._ttl_ms = int(ttl * 1000)
        self._prefix = prefix

    async def put(self, handle: str, login: LoginRequest) -> None:
        await self._redis.set(
            self._prefix + _key(handle), msgspec.msgpack.encode(login), px=self._ttl_ms
        )

    async def take(self, handle: str) -> LoginRequest | None:
        raw = await self._redis.getdel(self._prefix + _key(handle))
        if not isinstance(raw, bytes):
            return None
        return msgspec.msgpack.decode(raw, type=LoginRequest)
