"""The two caches of the gateway.

:class:`SingleFlightCache`: a TTL cache whose concurrent misses for one key share a single load.
Used three ways: the micro-cache of GET responses, the clusters of a tenant, and the sources and
destinations of a cluster. A load runs as its own task, so a caller that goes away (the browser
closed the tab) does not cancel it for the others waiting on the same key.

:class:`StaleWhileRefresh`: one value from elsewhere that serves on while it is refreshed in the
background: the identity provider's metadata, and its signing keys.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, Literal, TypeVar

CacheOutcome = Literal["hit", "miss", "bypass"]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

logger = logging.getLogger("bff.cache")


class SingleFlightCache(Generic[K, V]):
    """``get(key, load)``: a fresh cached value, or the result of one shared ``load()``.

    ``ttl=0`` disables the cache entirely: every call loads on its own. ``report`` is told how
    each ``get`` was answered: ``hit`` (cached), ``miss`` (loaded, or joined a load under way) or
    ``bypass`` (no cache); a ``quiet`` call, a lookup made on the side of the answer, is not
    reported.
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

    async def get(self, key: K, load: Callable[[], Awaitable[V]], *, quiet: bool = False) -> V:
        report = None if quiet else self._report
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

    def peek(self, key: K, *, quiet: bool = False) -> V | None:
        """The fresh cached value, reported as a ``hit``; or None, reporting nothing (then
        :meth:`get`). Lets a hot path answer a hit without awaiting anything."""
        value = self._fresh(key)
        if value is not None and self._report is not None and not quiet:
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


class StaleWhileRefresh(Generic[V]):
    """One value, loaded by ``load`` and kept.

    Until it has loaded, concurrent callers share one attempt; after a failed one, callers get
    the same error for ``retry_after`` seconds without trying again. Once loaded, it serves on:
    older than ``max_age``, it is reloaded in the background while the copy keeps serving, at
    most one attempt per ``retry_after`` (a failed reload keeps the copy, and is logged).
    ``load`` raises only ``errors``; anything else is a bug and propagates.
    """

    def __init__(
        self,
        load: Callable[[], Awaitable[V]],
        *,
        name: str,
        errors: type[Exception] | tuple[type[Exception], ...],
        max_age: float,
        retry_after: float,
        clock: Callable[[], float],
    ) -> None:
        self._load = load
        self._name = name
        self._errors = errors
        self.max_age = max_age
        self.retry_after = retry_after
        self._clock = clock
        self.value: V | None = None
        self._loaded_at = 0.0
        self._attempted_at: float | None = None
        self._failure: Exception | None = None
        self._lock = asyncio.Lock()
        self._refreshing: asyncio.Task[None] | None = None

    @property
    def refreshing(self) -> bool:
        """A background refresh is under way."""
        return self._refreshing is not None

    def current(self) -> V | None:
        """The value as it is (None before the first load); an old one starts its refresh."""
        if self.value is not None and self._refreshing is None:
            now = self._clock()
            if now - self._loaded_at >= self.max_age and self._may_load(now):
                self._refreshing = asyncio.create_task(self._refresh())
        return self.value

    async def get(self) -> V:
        """The value, loaded first if it never was; raises the load's error."""
        value = self.current()
        if value is not None:
            return value
        if self._failure is not None and not self._may_load(self._clock()):
            raise self._failure
        async with self._lock:
            if self.value is not None:  # another task loaded it while this one waited
                return self.value
            return await self._attempt()

    async def attempt(self) -> V | None:
        """The value, loaded if it never was; None if that fails, and the failure is not kept
        (an early try, at start, must not make the first callers fail fast)."""
        try:
            return await self.get()
        except self._errors:
            self._failure = self._attempted_at = None
            return None

    async def reload(self, *, good: Callable[[V], bool] | None = None, force: bool = False) -> V:
        """Load now, unless the value is fresh and ``good`` (another task may have reloaded it
        while this one waited), or an attempt was made within ``retry_after`` (``force``
        ignores that). A failure keeps the value there is, or raises when there is none."""
        async with self._lock:
            now, value = self._clock(), self.value
            if value is not None and now - self._loaded_at < self.max_age and good and good(value):
                return value
            if value is not None and not (force or self._may_load(now)):
                return value
            if value is None and not force and self._failure and not self._may_load(now):
                raise self._failure
            try:
                return await self._attempt()
            except self._errors:
                if value is None:
                    raise
                return value

    def _may_load(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.retry_after

    async def _attempt(self) -> V:
        self._attempted_at = self._clock()
        try:
            value = await self._load()
        except self._errors as exc:
            self._failure = exc
            raise
        self.value, self._loaded_at, self._failure = value, self._clock(), None
        return value

    async def _refresh(self) -> None:
        try:
            async with self._lock:
                if self._clock() - self._loaded_at >= self.max_age:
                    await self._attempt()
        except self._errors as exc:
            logger.warning("%s: refresh failed, keeping the copy: %s", self._name, exc)
        finally:
            self._refreshing = None
