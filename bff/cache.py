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
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._ttl = ttl
        self._maxsize = maxsize
        self._timer = timer
        # key -> (expires at, value), oldest stored first: a plain dict, as a lookup on the hot
        # path costs a fraction of a general-purpose cache's.
        self._cache: dict[K, tuple[float, V]] | None = {} if ttl > 0 else None
        self._inflight: dict[K, asyncio.Task[V]] = {}
        self._generation = 0
        self._report = report

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        report = self._report
        if self._cache is None:
            if report is not None:
                report("bypass")
            return await load()
        value = self._fresh(key)
        if value is not None:
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
        value = self._fresh(key)
        if value is not None and self._report is not None:
            self._report("hit")
        return value

    def _fresh(self, key: K) -> V | None:
        if self._cache is None:
            return None
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] <= self._timer():
            del self._cache[key]
            return None
        return entry[1]

    def _store(self, key: K, value: V) -> None:
        assert self._cache is not None
        self._cache.pop(key, None)
        if len(self._cache) >= self._maxsize:
            now = self._timer()
            for stale in [k for k, (expires, _) in self._cache.items() if expires <= now]:
                del self._cache[stale]
            while len(self._cache) >= self._maxsize:
                del self._cache[next(iter(self._cache))]  # the oldest stored
        self._cache[key] = (self._timer() + self._ttl, value)

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
            self._store(key, task.result())
