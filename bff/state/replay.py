"""The replay cache: token ids remembered for a while, so a one-time token is refused the
second time (back-channel logout tokens by their ``jti``).

:class:`MemoryReplayCache` remembers in this process; :class:`RedisReplayCache` in Redis, so a
replay to another instance is refused too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import cachetools
from redis.asyncio import Redis

__all__ = ["MemoryReplayCache", "RedisReplayCache", "ReplayCache"]


class ReplayCache(Protocol):
    """Remembers token ids for a while, to refuse the second use of a one-time token."""

    async def remember(self, token_id: str) -> bool:
        """Record `token_id`; return True the first time, False when it was already seen."""
        ...


class MemoryReplayCache:
    """Token ids remembered in this process for `ttl` seconds (bounded to `max_size`)."""

    def __init__(
        self,
        *,
        ttl: float = 600.0,
        max_size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seen: cachetools.TTLCache[str, bool] = cachetools.TTLCache(
            maxsize=max_size, ttl=ttl, timer=clock
        )

    async def remember(self, token_id: str) -> bool:
        """Record `token_id`; return True the first time, False when it was already seen."""
        if token_id in self._seen:
            return False
        self._seen[token_id] = True
        return True


class RedisReplayCache:
    """Token ids remembered in Redis (`SET NX EX`), so a replay to another instance is refused."""

    def __init__(self, redis: Redis, *, ttl: float = 600.0, prefix: str = "bff:jti:") -> None:
        self._redis = redis
        self._ttl_ms = max(1, int(ttl * 1000))
        self.prefix = prefix

    async def remember(self, token_id: str) -> bool:
        """Record `token_id`; return True the first time, False when it was already seen."""
        created = await self._redis.set(f"{self.prefix}{token_id}", b"1", nx=True, px=self._ttl_ms)
        return bool(created)
