"""Telling every BFF instance what changed elsewhere: a write to a tenant's cluster (so no
micro-cache serves what it replaced), and a session that changed or ended (so no instance answers
from its copy of the record, and the event streams that follow the session hear of it at once).

Alone, an instance only tells itself (:class:`MemoryInvalidation`). Instances that share Redis
also publish on channels that all of them listen to (:class:`RedisInvalidation`). A lost
connection is retried; meanwhile the short TTL of the micro-cache bounds how stale another
instance can be, and no instance uses its copies of session records (:class:`SessionCopies`),
which start empty again once the channel is back, since a message may have been missed; for the
same reason every event stream then looks at its session again (:class:`SessionWatch`).

A message on :data:`SESSIONS_CHANNEL` is the handles of the sessions, then, for sessions that
ended, ``ended:<why>`` (:data:`~bff.state.sessions.Ending`), all joined by ``\x1f``. An instance
of an earlier release reads that last part as one more handle, which it has no copy of: the
channel stays readable to every release during a rolling update.
"""

from __future__ import annotations

import asyncio
import logging
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .health import REDIS_DOWN, RedisHealth
from .sessions import Ending

logger = logging.getLogger("bff.invalidation")

CHANNEL = "bff:cache-invalidation"
SESSIONS_CHANNEL = "bff:session-invalidation"
_SEPARATOR = "\x1f"
_ENDED = "ended:"
_ENDINGS: frozenset[str] = frozenset(typing.get_args(Ending))

Forget = Callable[[str, str], None]
"""Drops the local entries of (tenant, cluster)."""


class SessionCopies(Protocol):
    """An instance's copies of session records, kept only while the channel is up."""

    def drop(self, handles: Iterable[str]) -> None:
        """These sessions changed or ended elsewhere."""
        ...

    def reset(self, *, usable: bool) -> None:
        """Forget every copy; keep new ones only if ``usable`` (the channel is up)."""
        ...


class SessionWatch(Protocol):
    """What follows sessions live on this instance: the event streams
    (:class:`bff.auth.session_events.SessionEvents`)."""

    def changed(self, handles: Sequence[str], ending: Ending | None) -> None:
        """These sessions changed (``None``: a token refresh saved them), or ended, and why."""
        ...

    def missed(self) -> None:
        """What other instances announced may have been missed: look at every session again."""
        ...


class Invalidation(Protocol):
    async def written(self, tenant_id: str, cluster_id: str) -> None:
        """A write went through this instance to ``tenant_id``/``cluster_id``."""
        ...

    async def sessions_changed(self, handles: list[str], ending: Ending | None) -> None:
        """Sessions this instance changed or ended (the session store's announcement)."""
        ...

    def watch(self, watcher: SessionWatch) -> None:
        """Tell ``watcher`` of every session changed or ended, on this instance or another."""
        ...


class MemoryInvalidation:
    def __init__(self, forget: Forget) -> None:
        self._forget = forget
        self._watchers: list[SessionWatch] = []

    async def written(self, tenant_id: str, cluster_id: str) -> None:
        self._forget(tenant_id, cluster_id)

    async def sessions_changed(self, handles: list[str], ending: Ending | None) -> None:
        for watcher in self._watchers:
            watcher.changed(handles, ending)

    def watch(self, watcher: SessionWatch) -> None:
        self._watchers.append(watcher)


class RedisInvalidation:
    """Publishes writes and session changes, and applies every instance's to the local caches.

    :meth:`listen` runs for the app's lifetime (a lifespan task) and reconnects after errors.
    While Redis is known to be away (``health``), a write is not announced: the request does not
    wait for Redis a second time.
    """

    def __init__(
        self,
        redis: Redis,
        forget: Forget,
        *,
        health: RedisHealth,
        channel: str = CHANNEL,
        retry_delay: float = 1.0,
    ) -> None:
        self._redis = redis
        self._forget = forget
        self._health = health
        self._channel = channel
        self._retry_delay = retry_delay
        self.subscribed = asyncio.Event()
        self._copies: list[SessionCopies] = []
        self._watchers: list[SessionWatch] = []

    def keep_current(self, copies: SessionCopies) -> None:
        """Drop ``copies`` of sessions others change, and use them only while subscribed."""
        self._copies.append(copies)
        copies.reset(usable=self.subscribed.is_set())

    def watch(self, watcher: SessionWatch) -> None:
        self._watchers.append(watcher)

    async def written(self, tenant_id: str, cluster_id: str) -> None:
        self._forget(tenant_id, cluster_id)
        if not self._health.up:
            return
        try:
            await self._redis.publish(self._channel, f"{tenant_id}{_SEPARATOR}{cluster_id}")
        except REDIS_DOWN as exc:
            self._health.failed(exc)
            logger.warning("cannot tell other instances about a write: %s", type(exc).__name__)

    async def sessions_changed(self, handles: list[str], ending: Ending | None) -> None:
        """Sessions this instance changed or ended: every instance drops its copies and tells
        its watchers. The store has just written to Redis, so this is tried whatever the health
        says; a failure is logged (the others' copies then live out their
        ``near_cache_seconds``, and their streams learn of it at their next look)."""
        self._apply(handles, ending)
        parts = [*handles, _ENDED + ending] if ending is not None else handles
        try:
            await self._redis.publish(SESSIONS_CHANNEL, _SEPARATOR.join(parts))
        except REDIS_DOWN as exc:
            logger.error(
                "cannot tell other instances that %d session(s) changed: %s",
                len(handles),
                type(exc).__name__,
            )

    async def listen(self) -> None:
        while True:
            try:
                await self._listen_once()
            except RedisError as exc:
                self._lost()
                logger.warning("invalidation channel lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(self._retry_delay)
            except BaseException:
                self._lost()
                raise

    def _lost(self) -> None:
        self.subscribed.clear()
        for copies in self._copies:
            copies.reset(usable=False)

    async def _listen_once(self) -> None:
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(self._channel, SESSIONS_CHANNEL)
            pending = {self._channel, SESSIONS_CHANNEL}
            async for message in pubsub.listen():
                kind, channel = message.get("type"), _text(message.get("channel"))
                if kind == "subscribe":
                    pending.discard(channel)
                    if not pending:
                        # Only now does Redis deliver what others publish to this instance;
                        # what was published before may have been missed: start afresh.
                        for copies in self._copies:
                            copies.reset(usable=True)
                        for watcher in self._watchers:
                            watcher.missed()
                        self.subscribed.set()
                    continue
                if kind != "message":
                    continue
                text = _text(message.get("data"))
                if channel == SESSIONS_CHANNEL:
                    self._apply(*_sessions_message(text))
                    continue
                tenant_id, _, cluster_id = text.partition(_SEPARATOR)
                if tenant_id and cluster_id:
                    self._forget(tenant_id, cluster_id)

    def _apply(self, handles: list[str], ending: Ending | None) -> None:
        for copies in self._copies:
            copies.drop(handles)
        for watcher in self._watchers:
            watcher.changed(handles, ending)


def _sessions_message(text: str) -> tuple[list[str], Ending | None]:
    """The handles a message on :data:`SESSIONS_CHANNEL` names, and why they ended, if they did
    (a reason this release does not know is ``unknown``)."""
    handles = text.split(_SEPARATOR)
    if not handles[-1].startswith(_ENDED):
        return handles, None
    why = handles.pop()[len(_ENDED) :]
    return handles, typing.cast(Ending, why) if why in _ENDINGS else "unknown"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
