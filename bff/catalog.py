"""What the flow screens look up besides flows: a tenant's clusters and a cluster's sources and
destinations, each cached per tenant (and cluster) with a short TTL and single-flight.

Where a lookup is the answer (the clusters for the picker, a cluster's form options), the
request's cache outcome (``Server-Timing``, the access line) is the lookup's; where it only
checks or decorates another answer (the cluster exists, the names of a flow's source), the
outcome stays the answer's own.

Display names are best effort: one attempt, and a failure is remembered for a few seconds, so a
failing lookup neither slows every flow list nor trips the upstream circuit breaker that the
flow calls themselves depend on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import upstream_client as uc

from .cache import SingleFlightCache
from .context import note_cache
from .problems import not_found
from .views import UNKNOWN_NAMES, Names

logger = logging.getLogger("bff.catalog")

NAMES_RETRY_AFTER = 5.0
NAMES_WAIT = 2.0
_BEST_EFFORT = uc.RetryConfig(max_attempts=1)

Endpoints = tuple[list[uc.Ingester], list[uc.Destination]]
Token = Callable[[], uc.Credential]
"""The caller's upstream credential, made only when a lookup has to call the upstream."""


class _Cluster:
    """A cluster's sources and destinations as loaded, and their display names, built once."""

    __slots__ = ("endpoints", "names")

    def __init__(self, ingesters: list[uc.Ingester], destinations: list[uc.Destination]) -> None:
        self.endpoints: Endpoints = (ingesters, destinations)
        self.names = Names(
            sources={i.id: i.name for i in ingesters},
            destinations={d.id: d.name for d in destinations},
        )


class Catalog:
    def __init__(
        self,
        client: uc.BackendClient,
        *,
        ttl: float,
        maxsize: int,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._clusters: SingleFlightCache[str, list[uc.Cluster]] = SingleFlightCache(
            ttl=ttl, maxsize=maxsize, report=note_cache
        )
        self._endpoints: SingleFlightCache[tuple[str, str], _Cluster] = SingleFlightCache(
            ttl=ttl, maxsize=maxsize, report=note_cache
        )
        # (tenant, cluster) -> until when its names are not looked up again after a failure.
        self._names_failed: dict[tuple[str, str], float] = {}
        self._maxsize = maxsize
        self._timer = timer

    async def clusters(
        self, tenant_id: str, *, token: Token, request_id: str, quiet: bool = False
    ) -> list[uc.Cluster]:
        """The tenant's clusters; unless ``quiet``, they are the answer (see the module)."""
        return await self._clusters.get(
            tenant_id,
            lambda: self._client.list_clusters(tenant_id, token=token(), request_id=request_id),
            quiet=quiet,
        )

    async def require_cluster(
        self, tenant_id: str, cluster_id: str, *, token: Token, request_id: str
    ) -> None:
        """404 unless ``cluster_id`` is one of the tenant's clusters."""
        clusters = self._clusters.peek(tenant_id, quiet=True)  # a hit needs no await
        if clusters is None:
            clusters = await self.clusters(
                tenant_id, token=token, request_id=request_id, quiet=True
            )
        if not any(cluster.id == cluster_id for cluster in clusters):
            raise not_found("The cluster does not exist in this tenant.")

    async def endpoints(
        self,
        tenant_id: str,
        cluster_id: str,
        *,
        token: Token,
        request_id: str,
    ) -> Endpoints:
        """The cluster's sources (ingesters) and destinations, as the answer."""
        return (await self._cluster(tenant_id, cluster_id, token, request_id, None)).endpoints

    async def _cluster(
        self,
        tenant_id: str,
        cluster_id: str,
        token: Token,
        request_id: str,
        retries: uc.RetryConfig | None,
        *,
        quiet: bool = False,
    ) -> _Cluster:
        async def load() -> _Cluster:
            credential = token()
            ingesters, destinations = await asyncio.gather(
                self._client.list_ingesters(
                    tenant_id,
                    cluster_id=cluster_id,
                    token=credential,
                    request_id=request_id,
                    retries=retries,
                ),
                self._client.list_destinations(
                    tenant_id,
                    cluster_id=cluster_id,
                    token=credential,
                    request_id=request_id,
                    retries=retries,
                ),
            )
            return _Cluster(ingesters, destinations)

        return await self._endpoints.get((tenant_id, cluster_id), load, quiet=quiet)

    def _failed_recently(self, key: tuple[str, str]) -> bool:
        until = self._names_failed.get(key)
        if until is None:
            return False
        if until <= self._timer():
            del self._names_failed[key]
            return False
        return True

    def cached_names(self, tenant_id: str, cluster_id: str) -> Names | None:
        """The display names when known without a lookup (or a recent lookup failed); else None."""
        key = (tenant_id, cluster_id)
        if self._names_failed and self._failed_recently(key):
            return UNKNOWN_NAMES
        cluster = self._endpoints.peek(key, quiet=True)
        return cluster.names if cluster is not None else None

    async def names(
        self, tenant_id: str, cluster_id: str, *, token: Token, request_id: str
    ) -> Names:
        """Display names for flows; degrades to unknown names rather than failing the request."""
        cached = self.cached_names(tenant_id, cluster_id)
        if cached is not None:
            return cached
        try:
            # A slow lookup must not hold the flows back; the load itself goes on and fills
            # the cache for the next request.
            async with asyncio.timeout(NAMES_WAIT):
                cluster = await self._cluster(
                    tenant_id, cluster_id, token, request_id, _BEST_EFFORT, quiet=True
                )
        except TimeoutError:
            logger.warning(
                "name lookup slower than %ss for %s/%s (request %s)",
                NAMES_WAIT,
                tenant_id,
                cluster_id,
                request_id,
            )
            return UNKNOWN_NAMES
        except uc.UpstreamError as exc:
            if len(self._names_failed) >= self._maxsize:
                self._names_failed.clear()  # many failing clusters at once: all are retried
            self._names_failed[tenant_id, cluster_id] = self._timer() + NAMES_RETRY_AFTER
            logger.warning(
                "name lookup failed for %s/%s (request %s): %s",
                tenant_id,
                cluster_id,
                request_id,
                type(exc).__name__,
            )
            return UNKNOWN_NAMES
        return cluster.names
