"""An instance's own copies of session records kept in Redis, so a hot session costs no round trip.

A copy lives at most ``ttl`` seconds, the cache holds at most ``max_entries`` (the oldest go
first), and it is used only while the invalidation channel is up
(:class:`bff.state.invalidation.RedisInvalidation` calls :meth:`NearCache.reset`): every change
or end of a session anywhere drops its copy on every instance (:meth:`NearCache.drop`), and a
channel that comes back starts from an empty cache, since a message may have been missed.

A load from Redis that raced a drop must not put back what was dropped: :meth:`NearCache.mark`
before the load, and :meth:`NearCache.put` keeps the copy only if nothing was dropped since.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sessions import Session


@dataclass(slots=True)
class Copy:
    session: Session
    copied_at: float
    touched_at: float
    """When this instance last wrote the session's activity to Redis."""


class NearCache:
    def __init__(self, *, ttl: float, max_entries: int) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._copies: dict[str, Copy] = {}
        self._usable = False
        self._drops = 0

    def get(self, handle: str, now: float) -> Copy | None:
        copy = self._copies.get(handle)
        if copy is None:
            return None
        if now - copy.copied_at >= self._ttl:
            del self._copies[handle]
            return None
        return copy

    def mark(self) -> int:
        """Call before loading a record from Redis; pass the result to :meth:`put`."""
        return self._drops

    def put(self, handle: str, copy: Copy, mark: int) -> None:
        if not self._usable or self._ttl <= 0 or mark != self._drops:
            return
        if len(self._copies) >= self._max_entries and handle not in self._copies:
            del self._copies[next(iter(self._copies))]
        self._copies[handle] = copy

    def drop(self, handles: Iterable[str]) -> None:
        self._drops += 1
        for handle in handles:
            self._copies.pop(handle, None)

    def reset(self, *, usable: bool) -> None:
        self._drops += 1
        self._copies.clear()
        self._usable = usable
