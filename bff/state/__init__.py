"""Shared state: the small stores that instances of the gateway share through Redis.

Each store is one protocol with two backends, a memory one (one process: development, tests,
single-instance deployments) and a Redis one (several instances), in a module of its own:

=================  ==============================  =========================================
store              module                          what it keeps
=================  ==============================  =========================================
sessions           :mod:`bff.state.sessions`       signed-in browsers and their tokens
pending sign-ins   :mod:`bff.state.logins`         state, nonce and PKCE verifier in flight
refresh locks      :mod:`bff.state.refresh_locks`  who may refresh a session's tokens now
replay cache       :mod:`bff.state.replay`         ids of one-time tokens already used
invalidation       :mod:`bff.state.invalidation`   "this cluster was written", "this session
                                                  changed" (or "ended, and why") to every
                                                  instance and its event streams
rate limiter       :mod:`bff.state.rate_limit`     calls per caller and minute
=================  ==============================  =========================================

:func:`open_stores` makes the one choice between the backends, from ``[sessions].backend``. In
Redis, nothing readable is at rest: sessions and pending sign-ins are sealed
(:mod:`bff.state.sealing`); a hot session is answered from this instance's copy
(:mod:`bff.state.near_cache`); and a request waits for an absent Redis at most once
(:mod:`bff.state.health`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from ..settings import Settings
from .connection import connect
from .health import RedisHealth
from .invalidation import Forget, Invalidation, MemoryInvalidation, RedisInvalidation
from .logins import LoginStore, MemoryLoginStore, RedisLoginStore
from .near_cache import NearCache
from .rate_limit import FallbackRateLimiter, MemoryRateLimiter, RateLimiter, RedisRateLimiter
from .refresh_locks import MemoryRefreshLock, RedisRefreshLock, RefreshLock
from .replay import MemoryReplayCache, RedisReplayCache, ReplayCache
from .sealing import load_key_ring
from .sessions import MemorySessionStore, RedisSessionStore, SessionStore

__all__ = ["Stores", "open_stores"]


@dataclass(frozen=True)
class Stores:
    sessions: SessionStore
    logins: LoginStore
    refresh_lock: RefreshLock
    replay_cache: ReplayCache
    """None: each token validator remembers in memory, as long as it accepts a token's age."""
    invalidation: Invalidation
    rate_limiter: RateLimiter | None
    """None when ``[bff].rate_limit_per_minute`` is 0."""


@asynccontextmanager
async def open_stores(
    settings: Settings,
    *,
    forget: Forget,
    clock: Callable[[], float] = time.time,
    on_rate_limit_fallback: Callable[[], None] = lambda: None,
) -> AsyncIterator[Stores]:
    """The stores ``settings`` ask for, open for the ``async with`` block and closed after it.

    ``forget`` drops the local cache entries of a (tenant, cluster) that some instance wrote.
    ``on_rate_limit_fallback`` is told of each call counted locally because Redis was away.
    """
    async with AsyncExitStack() as stack:
        if settings.sessions.backend == "redis":
            yield _redis_stores(settings, stack, forget, clock, on_rate_limit_fallback)
        else:
            yield _memory_stores(settings, forget, clock)


def _redis_stores(
    settings: Settings,
    stack: AsyncExitStack,
    forget: Forget,
    clock: Callable[[], float],
    on_rate_limit_fallback: Callable[[], None],
) -> Stores:
    """Every store in the one Redis, its connections and listener closed with ``stack``."""
    config, limit = settings.sessions, settings.bff.rate_limit_per_minute
    redis = connect(config)
    stack.push_async_callback(redis.aclose)
    assert config.encryption_keys_file is not None  # the settings require it
    ring = load_key_ring(config.encryption_keys_file)
    health = RedisHealth(redis)
    stack.callback(health.close)
    invalidation = RedisInvalidation(redis, forget, health=health)
    near = NearCache(ttl=config.near_cache_seconds, max_entries=config.near_cache_max_entries)
    invalidation.keep_current(near)
    listener = asyncio.create_task(invalidation.listen(), name="invalidation")
    stack.callback(listener.cancel)
    return Stores(
        sessions=RedisSessionStore(
            redis,
            ring=ring,
            idle_timeout=config.idle_timeout_seconds,
            absolute_timeout=config.absolute_timeout_seconds,
            clock=clock,
            near=near,
            touch_interval=config.touch_interval_seconds,
            announce=invalidation.sessions_changed,
        ),
        logins=RedisLoginStore(
            redis,
            ring=ring,
            total=config.max_pending_sign_ins,
            per_client=config.max_pending_sign_ins_per_client,
            clock=clock,
        ),
        refresh_lock=RedisRefreshLock(redis),
        replay_cache=RedisReplayCache(redis),
        invalidation=invalidation,
        rate_limiter=FallbackRateLimiter(
            RedisRateLimiter(redis, limit, clock=clock),
            MemoryRateLimiter(limit, clock=clock),
            health=health,
            on_fallback=on_rate_limit_fallback,
        )
        if limit
        else None,
    )


def _memory_stores(settings: Settings, forget: Forget, clock: Callable[[], float]) -> Stores:
    """Every store in this process's memory: one process, nothing shared."""
    config, limit = settings.sessions, settings.bff.rate_limit_per_minute
    local = MemoryInvalidation(forget)
    return Stores(
        sessions=MemorySessionStore(
            idle_timeout=config.idle_timeout_seconds,
            absolute_timeout=config.absolute_timeout_seconds,
            clock=clock,
            announce=local.sessions_changed,
        ),
        logins=MemoryLoginStore(
            total=config.max_pending_sign_ins, per_client=config.max_pending_sign_ins_per_client
        ),
        refresh_lock=MemoryRefreshLock(),
        replay_cache=MemoryReplayCache(),
        invalidation=local,
        rate_limiter=MemoryRateLimiter(limit, clock=clock) if limit else None,
    )
