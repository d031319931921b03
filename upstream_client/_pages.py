"""Paged lists: the upstream's cursors, followed page after page; catalogue lists read whole."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

import msgspec

from upstream_client._calls import BaseClient, decode
from upstream_client._config import RetryConfig
from upstream_client._dpop import Credential
from upstream_client._exceptions import ResponseValidationError
from upstream_client._models import (
    Cluster,
    ClusterPage,
    Destination,
    DestinationPage,
    Ingester,
    IngesterPage,
)
from upstream_client._urls import TENANTS, build_url, check_id

_T = TypeVar("_T")
_P = TypeVar("_P")

MAX_CATALOGUE_PAGES = 1000


class Catalogue(NamedTuple, Generic[_P, _T]):
    """One catalogue list: its word in the path, its page's decoder and the items of a page."""

    collection: str
    decoder: msgspec.json.Decoder[_P]
    items_of: Callable[[_P], list[_T]]


CLUSTERS: Catalogue[ClusterPage, Cluster] = Catalogue(
    "clusters", msgspec.json.Decoder(ClusterPage), lambda page: page.clusters
)
INGESTERS: Catalogue[IngesterPage, Ingester] = Catalogue(
    "ingesters", msgspec.json.Decoder(IngesterPage), lambda page: page.ingesters
)
DESTINATIONS: Catalogue[DestinationPage, Destination] = Catalogue(
    "destinations", msgspec.json.Decoder(DestinationPage), lambda page: page.destinations
)


def next_cursor(cursor: str | None, seen: set[str]) -> str | None:
    """The cursor of the next page; an upstream that hands out a cursor twice is broken."""
    if cursor is None:
        return None
    if cursor in seen:
        raise ResponseValidationError("the upstream returned the same page cursor twice")
    seen.add(cursor)
    return cursor


async def collect(
    client: BaseClient,
    catalogue: Catalogue[_P, _T],
    tenant_id: str,
    cluster_id: str | None,
    token: Credential,
    request_id: str | None,
    retries: RetryConfig | None,
) -> list[_T]:
    """Every item of a catalogue list of the tenant, optionally of one cluster, page by page.

    Each page is one call of ``client``, with ``retries`` in place of its policy when given.
    """
    collection, decoder, items_of = catalogue
    params: dict[str, str | int] = {}
    if cluster_id is not None:
        params["cluster_id"] = check_id("cluster_id", cluster_id)
    segments = (TENANTS, ("tenant_id", tenant_id), ("", collection))
    items: list[_T] = []
    seen: set[str] = set()
    cursor: str | None = None
    while True:
        if cursor is not None:
            params["cursor"] = cursor
        url = build_url(client._base_url, client._base_path, segments, tuple(params.items()))
        answer = await client._call("GET", url, token=token, request_id=request_id, retries=retries)
        page = decode(decoder, answer)
        items.extend(items_of(page))
        cursor = next_cursor(getattr(page, "next_cursor", None), seen)
        if cursor is None:
            return items
        if len(seen) >= MAX_CATALOGUE_PAGES:
            # Catalogue lists are small; an upstream that never stops paging is broken.
            raise ResponseValidationError(f"{collection}: more than {MAX_CATALOGUE_PAGES} pages")
