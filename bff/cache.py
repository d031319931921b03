"""A TTL cache whose concurrent misses for one key share a single load.

Used three ways: the micro-cache of GET responses, the clusters of a tenant, and the sources and
destinations of a cluster. A load runs as its own task, so a caller that goes away (the browser
closed the tab) does not cancel it for the others waiting on the same key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, Literal, TypeVar

from cachetools import TTLCache

CacheOutcome = Literal["hit", "miss", "bypass"]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlightCache(Generic[K, V]):
    """``get(key, load)``: a fresh cached value, or the result of one shared ``load()``.

    ``ttl=0`` disables the cache entirely: every call loads on its own. ``report`` is told how
    each ``get`` was answered: ``hit`` (cached), ``miss`` (loaded, or joined a load under way) or
    ``bypass`` (no cache).
    """

    def __init__(
        self,
        *,
        ttl: float,
        maxsize: int,
        timer: Callable[[], float] = time.monotonic,
        report: Callable[[CacheOutcome], None] | None = None,
    ) -> None:
        self._cache: TTLCache[K, V] | None = (
            TTLCache(maxsize=maxsize, ttl=ttl, timer=timer) if ttl > 0 else None
        )
        self._inflight: dict[K, asyncio.Task[V]] = {}
        self._generation = 0
        self._report = report

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        report = self._report
        if self._cache is None:
            if report is not None:
                report("bypass")
            return await load()
        try:
            value = self._cache[key]
        except KeyError:
            pass
        else:
            if report is not None:
                report("hit")
            return value
        if report is not None:
            report("miss")
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            self._inflight[key] = task
            task.add_done_callback(partial(self._settle, key, self._generation))
        return await asyncio.shield(task)

    @property
    def enabled(self) -> bool:
        """False with ``ttl=0``: nothing is kept."""
        return self._cache is not None

    def peek(self, key: K) -> V | None:
        """The fresh cached value, reported as a ``hit``; or None, reporting nothing (then
        :meth:`get`). Lets a hot path answer a hit without awaiting anything."""
        if self._cache is None:
            return None
        value = self._cache.get(key)
        if value is not None and self._report is not None:
            self._report("hit")
        return value

    def invalidate(self, predicate: Callable[[K], bool]) -> None:
        """Forget every key matching ``predicate``, including loads already under way."""
        if self._cache is None:
            return
        # A load that started before a write may return what the write replaced: do not keep it,
        # and let the next caller start a new one.
        self._generation += 1
        for key in [k for k in self._cache if predicate(k)]:
            self._cache.pop(key, None)
        for key in [k for k in self._inflight if predicate(k)]:
            del self._inflight[key]

    def _settle(self, key: K, generation: int, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled() or task.exception() is not None:
            return
        if self._cache is not None and generation == self._generation:
            self._cache[key] = task.result()
