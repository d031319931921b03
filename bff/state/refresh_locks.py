"""Who may refresh a session's tokens right now, across every BFF instance.

Providers rotate refresh tokens: the second of two concurrent refreshes presents a token that is
already spent, and a careful provider then revokes the whole grant, ending the user's sign-in.
Within one process a shared task makes refreshes single-flight; across instances that share
sessions through Redis, this lock does.
"""

from __future__ import annotations

import secrets
from typing import Protocol

from redis.asyncio import Redis

# Deletes the lock only if it still holds our token: a lock that expired and was taken by
# another instance must not be released by us.
_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RefreshLock(Protocol):
    async def acquire(self, session_key: str) -> str | None:
        """A token proving the lock is held, or None when another instance holds it."""
        ...

    async def release(self, session_key: str, token: str) -> None: ...


class MemoryRefreshLock:
    """One process: in-process single-flight already serialises refreshes."""

    async def acquire(self, session_key: str) -> str | None:
        return "local"

    async def release(self, session_key: str, token: str) -> None:
        return None


class RedisRefreshLock:
    def __init__(
        self, redis: Redis, *, ttl: float = 15.0, prefix: str = "bff:refresh-lock:"
    ) -> None:
        self._redis = redis
        self._ttl_ms = int(ttl * 1000)
        self._prefix = prefix
        self._release = redis.register_script(_RELEASE_SCRIPT)

    async def acquire(self, session_key: str) -> str | None:
        token = secrets.token_hex(16)
        acquired = await self._redis.set(
            self._prefix + session_key, token, nx=True, px=self._ttl_ms
        )
        return token if acquired else None

    async def release(self, session_key: str, token: str) -> None:
        await self._release(keys=[self._prefix + session_key], args=[token])
