"""How many API calls one caller may make per minute, counted across every BFF instance.

A fixed one-minute window per caller (the principal's subject): simple, cheap (one counter per
caller and minute) and shared through Redis when instances share it. A caller over the limit gets
429 ``rate-limited`` with ``Retry-After`` up to the end of the window, before anything reaches the
upstream.

When Redis is away the limit is kept per instance (:class:`FallbackRateLimiter`): the API stays up,
a little more generous for as long as the outage lasts, and says so in its logs and metrics.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from cachetools import TTLCache
from redis.asyncio import Redis

from .health import REDIS_DOWN, RedisHealth

logger = logging.getLogger("bff.rate_limit")

WINDOW_SECONDS = 60


class RateLimiter(Protocol):
    async def hit(self, caller: str) -> float | None:
        """Count one call; None when allowed, else the seconds until the caller may try again."""
        ...


def _window(now: float) -> tuple[int, float]:
    start = math.floor(now / WINDOW_SECONDS) * WINDOW_SECONDS
    return start, start + WINDOW_SECONDS - now


class MemoryRateLimiter:
    def __init__(
        self, limit: int, *, clock: Callable[[], float] = time.time, maxsize: int = 100_000
    ) -> None:
        self._limit = limit
        self._clock = clock
        self._counts: TTLCache[tuple[str, int], int] = TTLCache(
            maxsize=maxsize, ttl=2 * WINDOW_SECONDS, timer=clock
        )

    async def hit(self, caller: str) -> float | None:
        start, remaining = _window(self._clock())
        key = (caller, start)
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return None if count <= self._limit else remaining


class RedisRateLimiter:
    def __init__(
        self,
        redis: Redis,
        limit: int,
        *,
        clock: Callable[[], float] = time.time,
        prefix: str = "bff:rate:",
    ) -> None:
        self._redis = redis
        self._limit = limit
        self._clock = clock
        self._prefix = prefix

    async def hit(self, caller: str) -> float | None:
        start, remaining = _window(self._clock())
        # The caller's subject, hashed: nothing that names a person is kept in Redis.
        key = f"{self._prefix}{hashlib.sha256(caller.encode()).hexdigest()[:32]}:{start}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 2 * WINDOW_SECONDS)
            count, _ = await pipe.execute()
        return None if int(count) <= self._limit else remaining


class FallbackRateLimiter:
    """``shared`` (Redis) while it answers; ``local`` (this instance's count) while it does not.

    Once Redis is found away, calls are counted locally at once, without asking it, until the
    ``health`` probe hears from it again (:class:`bff.state.health.RedisHealth`). Each call
    counted locally is reported to ``on_fallback`` (a metric); the switch each way is logged once,
    so an outage is one warning, not one per request.
    """

    def __init__(
        self,
        shared: RateLimiter,
        local: RateLimiter,
        *,
        health: RedisHealth,
        on_fallback: Callable[[], None] = lambda: None,
    ) -> None:
        self._shared = shared
        self._local = local
        self._health = health
        self._on_fallback = on_fallback
        self._falling_back = False

    async def hit(self, caller: str) -> float | None:
        if self._health.up:
            try:
                result = await self._shared.hit(caller)
            except REDIS_DOWN as exc:
                self._health.failed(exc)
            else:
                if self._falling_back:
                    self._falling_back = False
                    logger.warning("rate limit: Redis answers again; counting across instances")
                return result
        if not self._falling_back:
            self._falling_back = True
            logger.warning("rate limit: Redis unavailable; counting per instance until it answers")
        self._on_fallback()
        return await self._local.hit(caller)
