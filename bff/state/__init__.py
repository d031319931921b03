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
invalidation       :mod:`bff.state.invalidation`   "this cluster was written" to every cache
rate limiter       :mod:`bff.state.rate_limit`     calls per caller and minute
=================  ==============================  =========================================

:func:`open_stores` makes the one choice between the backends, from ``[sessions].backend``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis

from ..settings import Settings
from .invalidation import Forget, Invalidation, MemoryInvalidation, RedisInvalidation
from .logins import LoginStore, MemoryLoginStore, RedisLoginStore
from .rate_limit import FallbackRateLimiter, MemoryRateLimiter, RateLimiter, RedisRateLimiter
from .refresh_locks import MemoryRefreshLock, RedisRefreshLock, RefreshLock
from .replay import MemoryReplayCache, RedisReplayCache, ReplayCache
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
    sessions_config = settings.sessions
    idle = sessions_config.idle_timeout_seconds
    absolute = sessions_config.absolute_timeout_seconds
    limit = settings.bff.rate_limit_per_minute
    async with AsyncExitStack() as stack:
        if sessions_config.backend == "redis" and sessions_config.redis_url:
            # A blocking pool makes a burst wait for a connection instead of failing at the limit.
            wait = sessions_config.redis_timeout_seconds
            pool = BlockingConnectionPool.from_url(
                sessions_config.redis_url,
                max_connections=sessions_config.redis_max_connections,
                timeout=wait,
                socket_timeout=wait,
                socket_connect_timeout=wait,
                health_check_interval=sessions_config.redis_health_check_seconds,
            )
            redis = Redis.from_pool(pool)
            stack.push_async_callback(redis.aclose)
            invalidation = RedisInvalidation(redis, forget)
            listener = asyncio.create_task(invalidation.listen(), name="cache-invalidation")
            stack.callback(listener.cancel)
            stores = Stores(
                sessions=RedisSessionStore(
                    redis, idle_timeout=idle, absolute_timeout=absolute, clock=clock
                ),
                logins=RedisLoginStore(
                    redis,
                    total=sessions_config.max_pending_sign_ins,
                    per_client=sessions_config.max_pending_sign_ins_per_client,
                    clock=clock,
                ),
                refresh_lock=RedisRefreshLock(redis),
                replay_cache=RedisReplayCache(redis),
                invalidation=invalidation,
                rate_limiter=FallbackRateLimiter(
                    RedisRateLimiter(redis, limit, clock=clock),
                    MemoryRateLimiter(limit, clock=clock),
                    on_fallback=on_rate_limit_fallback,
                )
                if limit
                else None,
            )
        else:
            stores = Stores(
                sessions=MemorySessionStore(
                    idle_timeout=idle, absolute_timeout=absolute, clock=clock
                ),
                logins=MemoryLoginStore(
                    total=sessions_config.max_pending_sign_ins,
                    per_client=sessions_config.max_pending_sign_ins_per_client,
                ),
                refresh_lock=MemoryRefreshLock(),
                replay_cache=MemoryReplayCache(),
                invalidation=MemoryInvalidation(forget),
                rate_limiter=MemoryRateLimiter(limit, clock=clock) if limit else None,
            )
        yield stores
