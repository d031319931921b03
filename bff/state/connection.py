"""The one Redis client the stores share, built from ``[sessions]``: :func:`connect`.

Redis is one primary (with replicas for failover), reached one of two ways:

- **A URL**: ``redis_url``, ``redis://`` or ``rediss://`` (TLS, the server's certificate checked
  against ``redis_ca_file`` or the system's CAs, its name against the URL's host; a client
  certificate from ``redis_cert_file`` and ``redis_key_file`` when Redis asks for one).
- **Sentinels**: ``redis_sentinels`` tell where the primary named ``redis_sentinel_service`` is
  now, asked again for every new connection; ``redis_url`` then gives only the scheme (TLS to
  the data nodes, whose certificates must name the address the Sentinels announce), the
  credentials and the database. The Sentinels themselves are asked in plain TCP, with
  ``redis_sentinel_password`` when they want one.

Either way the pool blocks: a burst waits up to ``redis_timeout_seconds`` for a free connection
rather than failing at ``redis_max_connections``; with Sentinels too, through
:class:`BlockingSentinelConnectionPool` (redis-py's Sentinel pool over its blocking pool). Each
connection waits that long to connect and for each answer. Records are bytes
(``decode_responses=False``).

After a Sentinel failover: within :data:`FOLLOW_SECONDS` the pool closes its connections to
the former primary (see :class:`BlockingSentinelConnectionPool` for why it does not wait for
Sentinel to); a command they carried, or one that finds a node turned replica (``READONLY``), is
sent again once, on a connection to the new primary (:data:`_ONE_RETRY`,
:class:`PrimaryConnection`); scripts are loaded again where ``EVALSHA`` answers ``NOSCRIPT``
(redis-py's ``Script``); the invalidation channel's subscription is made again on its new
connection (redis-py's ``PubSub``). Replication is asynchronous: what the former primary
acknowledged just before the switch and had not passed on is lost (a touch, a pending sign-in,
at worst a session just made).

Redis Cluster is not supported yet. The stores send commands that touch several keys at once,
which Cluster allows only when every key lies in the same hash slot:

- :mod:`bff.state.sessions`: a session's record and its ``sub:`` and ``sid:`` index sets are
  written in one ``MULTI`` (create, delete by handle) and by one Lua script (save), and the
  delete-by-index script deletes records it finds in a set, keys it was not given;
- :mod:`bff.state.logins`: the per-client and total counters of started sign-ins are counted in
  one ``MULTI``;
- :mod:`bff.state.invalidation`: every instance holds one subscription, on one node, to channels
  every instance publishes to; a cluster would need a cluster-aware pub/sub (sharded channels,
  or plain ones broadcast over the cluster bus to every node).

Hash tags (``{…}``) alone would not do: a record is found by its session id and its index sets
by ``sub`` or ``sid``, so no one tag puts a record and its index sets in one slot. The writes
that keep them together (those ``MULTI`` blocks, the save script) would become steps slot by
slot that survive a partial failure, the deletion script would be given each key it deletes,
the two sign-in counters would share a tag, and the client would be ``RedisCluster`` with such a
pub/sub. Until then a deployment uses one primary, with replicas and Sentinels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, TimeoutError

from ..settings import SessionsSection

__all__ = [
    "FOLLOW_SECONDS",
    "BlockingSentinelConnectionPool",
    "PrimaryConnection",
    "PrimarySSLConnection",
    "connect",
]

logger = logging.getLogger("bff.redis")

FOLLOW_SECONDS = 1.0
"""How often a Sentinel pool asks where the primary is (besides at each new connection)."""

_NO_RETRY = Retry(NoBackoff(), 0)
_ONE_RETRY = Retry(NoBackoff(), 1, supported_errors=(ConnectionError,))
"""A command whose connection broke (a primary gone, or turned replica: ``READONLY``) is sent
once more, at once, on a fresh connection. A timeout is not retried: a silent Redis costs a
request one timeout, not two."""


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """Connections to the primary the Sentinels name, waiting for a free one at the limit.

    :class:`SentinelConnectionPool` finds the primary for each new connection (and then drops
    idle connections to a former one); :class:`BlockingConnectionPool`, next in the method
    order, makes a caller wait up to ``timeout`` when all ``max_connections`` are in use
    instead of failing at once.

    Sentinel turns a former primary that still runs into a replica only some seconds after the
    switch (up to ten, when it next asks it for INFO); until then it accepts writes that are
    lost, and hears nothing published on the new primary. So from its first connection on, the
    pool asks the Sentinels every :data:`FOLLOW_SECONDS` where the primary is (:meth:`follow`)
    and closes every connection to another node: idle ones, and those in use, whose command
    fails and is sent again on the new primary (:data:`_ONE_RETRY`), and whose subscriptions
    are made again there. Closing the pool closes the Sentinels' connections.
    """

    _follow: asyncio.Task[None] | None = None
    _followed: tuple[str, int] | None = None

    def make_connection(self) -> Any:
        if self._follow is None:
            self._follow = asyncio.get_running_loop().create_task(
                self._follow_primary(), name=f"redis-sentinel-follow-{self.service_name}"
            )
        return super().make_connection()  # type: ignore[no-untyped-call]

    async def _follow_primary(self) -> None:
        while True:
            await asyncio.sleep(FOLLOW_SECONDS)
            await self.follow()

    async def follow(self) -> None:
        """Ask the Sentinels where the primary is, and close every connection, idle or in use,
        to another node. (redis-py drops the idle ones only when it sees the address change:
        one in use then and released after would stay with the former primary.)"""
        try:
            primary = await self.get_master_address()  # type: ignore[no-untyped-call]
        except (ConnectionError, TimeoutError):
            return  # no Sentinel answers: keep what there is, ask again later
        if self._followed is not None and primary != self._followed:
            logger.warning("Redis primary moved to %s:%s (Sentinel)", *primary)
        self._followed = primary
        for connection in [*self._available_connections, *self._in_use_connections]:
            if isinstance(connection, Connection) and (connection.host, connection.port) != primary:
                _cut(connection)

    async def aclose(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
            self._follow = None
        await super().aclose()
        await self.sentinel_manager.aclose()


class PrimaryConnection(SentinelManagedConnection):
    """A connection to the primary that asks the Sentinels where it is whenever it connects.

    redis-py's own asks only when the pool hands it out: a command sent again after its
    connection broke (:data:`_ONE_RETRY`) would go back to the former primary's address
    (redis-py issue 3874), which, until Sentinel demotes it, takes writes that are then lost.
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        writer = self._writer
        if writer is not None and writer.transport.is_closing():
            await self.disconnect()  # cut by the pool's follow (:func:`_cut`): start afresh
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]  # through the Sentinels
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:
            # Cut while this command was being written: uvloop refuses to write on a closed
            # transport with a RuntimeError; to the caller (and its one retry) it is a lost
            # connection, which it is.
            await self.disconnect()
            raise ConnectionError(f"the connection to Redis was closed ({exc})") from exc


class PrimarySSLConnection(PrimaryConnection, SSLConnection):
    """:class:`PrimaryConnection` over TLS."""


def _cut(connection: Connection) -> None:
    """Close a connection, idle or being read by another task: that read fails as a lost
    connection, and an idle one is found closed when next handed out (redis-py's
    ``disconnect`` would pull the parser out from under a read, and awaits)."""
    writer = connection._writer
    if writer is not None:
        writer.transport.abort()


def connect(sessions: SessionsSection) -> Redis:
    """The client ``sessions`` describe (a URL, or Sentinels), on a blocking pool; not yet
    connected. The caller closes it (``aclose``), which closes its pool."""
    wait = sessions.redis_timeout_seconds
    options: dict[str, Any] = {
        "max_connections": sessions.redis_max_connections,
        "timeout": wait,  # for a free pooled connection
        "socket_timeout": wait,
        "socket_connect_timeout": wait,
        "health_check_interval": sessions.redis_health_check_seconds,
        "retry": _ONE_RETRY,
        "decode_responses": False,
    }
    url = parse_url(sessions.redis_url or "redis://")
    if url.get("connection_class") is SSLConnection:
        options.update(
            ssl_ca_certs=sessions.redis_ca_file,
            ssl_certfile=sessions.redis_cert_file,
            ssl_keyfile=sessions.redis_key_file,
            ssl_cert_reqs="required",
            ssl_check_hostname=True,
        )
    if not sessions.redis_sentinels:
        # As in redis-py's from_url, what the URL's query sets wins.
        return Redis.from_pool(BlockingConnectionPool(**{**options, **url}))
    service = sessions.redis_sentinel_service
    if not service:  # settings.py refuses Sentinels without it; this is for mypy and callers
        raise ValueError("[sessions].redis_sentinel_service: required with redis_sentinels")
    # Beside Sentinels the URL names no host: they do.
    node: dict[str, Any] = {k: v for k, v in url.items() if k not in {"host", "port"}}
    tls = node.pop("connection_class", None) is SSLConnection
    node["connection_class"] = PrimarySSLConnection if tls else PrimaryConnection
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        [_address(sentinel) for sentinel in sessions.redis_sentinels],
        sentinel_kwargs={
            "password": sessions.redis_sentinel_password,
            "socket_timeout": wait,
            "socket_connect_timeout": wait,
            # Not redis-py's default of ten retries: a Sentinel that is away costs one timeout,
            # then the next one is asked.
            "retry": _NO_RETRY,
        },
    )
    client: Redis = sentinels.master_for(
        service,
        connection_pool_class=BlockingSentinelConnectionPool,
        **{**options, **node},
    )
    return client


def _address(sentinel: str) -> tuple[str, int]:
    host, _, port = sentinel.rpartition(":")
    return host.strip("[]"), int(port)
