"""Whether Redis answers, as the stores that can do without it need to know.

When a call finds Redis away (it waited ``redis_timeout_seconds`` for nothing), :meth:`RedisHealth.
failed` marks it down; from then on what is optional (the shared rate limit, telling the other
instances about a write) does without Redis at once, while a background probe pings it every
``probe_interval`` seconds until it answers. So a request waits for an absent Redis at most once.
What cannot do without it (a session's record) still asks, and fails closed.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger("bff.redis")

REDIS_DOWN = (RedisError, OSError)
"""What a call raises when Redis is away (redis-py wraps most, not every, socket error)."""


class RedisHealth:
    def __init__(self, redis: Redis, *, probe_interval: float = 1.0) -> None:
        self._redis = redis
        self._probe_interval = probe_interval
        self._probe: asyncio.Task[None] | None = None
        self.up = True

    def failed(self, exc: BaseException) -> None:
        """A call found Redis away: optional work skips it until a probe gets an answer."""
        if not self.up:
            return
        self.up = False
        logger.warning(
            "Redis does not answer (%s); doing without it where possible until it does",
            type(exc).__name__,
        )
        self._probe = asyncio.get_running_loop().create_task(self._until_it_answers())

    async def _until_it_answers(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval)
            try:
                await self._redis.ping()
            except REDIS_DOWN:
                continue
            self.up = True
            self._probe = None
            logger.warning("Redis answers again")
            return

    def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
