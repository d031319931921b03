"""Telling every BFF instance that a write changed a tenant's cluster, so no micro-cache serves
what the write replaced.

Alone, an instance only drops its own entries (:class:`MemoryInvalidation`). Instances that share
Redis also publish each write on a channel that all of them listen to
(:class:`RedisInvalidation`); a lost connection is retried, and meanwhile the short TTL of the
micro-cache bounds how stale another instance can be.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger("bff.invalidation")

CHANNEL = "bff:cache-invalidation"
_SEPARATOR = "\x1f"

Forget = Callable[[str, str], None]
"""Drops the local entries of (tenant, cluster)."""


class Invalidation(Protocol):
    async def written(self, tenant_id: str, cluster_id: str) -> None:
        """A write went through this instance to ``tenant_id``/``cluster_id``."""
        ...


class MemoryInvalidation:
    def __init__(self, forget: Forget) -> None:
        self._forget = forget

    async def written(self, tenant_id: str, cluster_id: str) -> None:
        self._forget(tenant_id, cluster_id)


class RedisInvalidation:
    """Publishes writes and applies every instance's writes to the local cache.

    :meth:`listen` runs for the app's lifetime (a lifespan task) and reconnects after errors.
    """

    def __init__(
        self, redis: Redis, forget: Forget, *, channel: str = CHANNEL, retry_delay: float = 1.0
    ) -> None:
        self._redis = redis
        self._forget = forget
        self._channel = channel
        self._retry_delay = retry_delay
        self.subscribed = asyncio.Event()

    async def written(self, tenant_id: str, cluster_id: str) -> None:
        self._forget(tenant_id, cluster_id)
        try:
            await self._redis.publish(self._channel, f"{tenant_id}{_SEPARATOR}{cluster_id}")
        except RedisError as exc:
            logger.warning("cannot tell other instances about a write: %s", type(exc).__name__)

    async def listen(self) -> None:
        while True:
            try:
                await self._listen_once()
            except RedisError as exc:
                self.subscribed.clear()
                logger.warning("cache invalidation channel lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(self._retry_delay)

    async def _listen_once(self) -> None:
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            async for message in pubsub.listen():
                if message.get("type") == "subscribe":
                    # Only now does Redis deliver what others publish to this instance.
                    self.subscribed.set()
                    continue
                if message.get("type") != "message":
                    continue
                data = message.get("data")
                text = data.decode() if isinstance(data, bytes) else str(data)
                tenant_id, _, cluster_id = text.partition(_SEPARATOR)
                if tenant_id and cluster_id:
                    self._forget(tenant_id, cluster_id)
