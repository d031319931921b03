"""The backend client: one instance per upstream base URL, shared by every user's calls.

:class:`BackendClient` holds the API's calls: each checks its arguments, builds its URL and body
and decodes the answer. ``_calls.BaseClient`` makes the call (settings, transport, attempts,
retries, deadline, breaker, observer); ``_pages`` follows the cursors of paged lists.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import msgspec

from upstream_client._calls import USER_AGENT, BaseClient, decode
from upstream_client._config import RetryConfig
from upstream_client._dpop import Credential
from upstream_client._exceptions import APITimeoutError
from upstream_client._models import (
    Cluster,
    Destination,
    Flow,
    FlowCreate,
    FlowPage,
    FlowUpdate,
    Ingester,
)
from upstream_client._pages import CLUSTERS, DESTINATIONS, INGESTERS, collect, next_cursor
from upstream_client._transport import Exchange
from upstream_client._urls import TENANTS, build_url, check_header_value, check_id

_FLOW = msgspec.json.Decoder(Flow)
_FLOW_PAGE = msgspec.json.Decoder(FlowPage)
_ENCODER = msgspec.json.Encoder()

_FLOWS = ("", "delivery-flows")


class BackendClient(BaseClient):
    """Async client of the backend flows API.

    One client serves many users: every call takes the caller's credential as ``token``
    (a bearer JWT, an API key ``zen_key_…`` or a :class:`DPoPToken`) and an optional
    ``request_id`` sent as ``X-Request-ID``. Ids are validated before any I/O
    (:class:`InvalidIdError`).

    Reads, updates and deletes are retried on connection errors and on 408, 429, 502, 503 and
    504; creations too, because each carries an ``Idempotency-Key`` (the caller's, or one
    generated per call and reused on every attempt). ``timeout.total`` bounds a whole call,
    all attempts and backoffs included (each page fetched by ``iter_flows`` and the
    ``list_clusters``/``list_ingesters``/``list_destinations`` helpers is one call). The circuit
    breaker (``breaker``) belongs to the client, that is to its one base URL.

    ``observer`` (an :class:`AttemptObserver`) is told of every attempt before it is sent, and
    may add headers to it, and of its status once answered: the caller's tracing and timing.

    ``transport`` replaces the default aiohttp-backed transport with any
    ``httpx.AsyncBaseTransport`` (``httpx.ASGITransport(app)``, ``respx.MockTransport(...)``);
    the client closes it on :meth:`aclose`. ``sleep`` and ``clock`` are injectable so tests
    never wait. respx's global ``respx.mock`` does not reach the default transport: tests pass
    ``transport=httpx.MockTransport(router.async_handler)``, or ``httpx.AsyncHTTPTransport()``
    when they rely on ``respx.mock`` (it patches httpx's own pool).
    """

    async def ping(self) -> bool:
        """Whether the upstream's unauthenticated ``/healthz`` answers 2xx (readiness checks).

        One attempt, no retries, outside the circuit breaker's accounting, within
        ``timeout.connect + timeout.read``; an unreachable upstream raises ``APIConnectionError``.
        """
        url = httpx.URL(self._base_url + "/healthz")
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        try:
            async with asyncio.timeout(self._timeout.connect + self._timeout.read):
                answer = await self._attempt("GET", url, headers, None)
        except TimeoutError as exc:
            raise APITimeoutError(f"GET {url.path}: no answer in time") from exc
        return 200 <= answer.status < 300

    # Flows

    async def list_flows(
        self,
        tenant_id: str,
        *,
        cluster_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        token: Credential,
        request_id: str | None = None,
    ) -> FlowPage:
        """One page of the tenant's flows, optionally of one cluster (``limit`` 1 to 100)."""
        params: dict[str, str | int] = {}
        if cluster_id is not None:
            params["cluster_id"] = check_id("cluster_id", cluster_id)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError("limit must be an int")
            params["limit"] = limit
        if cursor is not None:
            params["cursor"] = cursor
        url = build_url(
            self._base_url,
            self._base_path,
            (TENANTS, ("tenant_id", tenant_id), _FLOWS),
            tuple(params.items()),
        )
        answer = await self._call("GET", url, token=token, request_id=request_id)
        page = decode(_FLOW_PAGE, answer)
        for flow in page.delivery_flows:
            flow.etag = _version_etag(flow)
        return page

    async def iter_flows(
        self,
        tenant_id: str,
        *,
        cluster_id: str | None = None,
        limit: int | None = None,
        token: Credential,
        request_id: str | None = None,
    ) -> AsyncIterator[Flow]:
        """Every flow of the tenant (or of one cluster), fetching page after page."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = await self.list_flows(
                tenant_id,
                cluster_id=cluster_id,
                limit=limit,
                cursor=cursor,
                token=token,
                request_id=request_id,
            )
            for flow in page.delivery_flows:
                yield flow
            cursor = next_cursor(page.next_cursor, seen)
            if cursor is None:
                return

    async def get_flow(
        self, tenant_id: str, flow_id: str, *, token: Credential, request_id: str | None = None
    ) -> Flow:
        """One flow, with the ``etag`` to send back as ``if_match``."""
        answer = await self._call(
            "GET", self._flow_url(tenant_id, flow_id), token=token, request_id=request_id
        )
        return _decode_flow(answer)

    async def create_flow(
        self,
        tenant_id: str,
        body: FlowCreate,
        *,
        idempotency_key: str | None = None,
        token: Credential,
        request_id: str | None = None,
    ) -> Flow:
        """Create a flow. Retries are safe: every attempt carries the same ``Idempotency-Key``."""
        if not isinstance(body, FlowCreate):
            raise TypeError("body must be a FlowCreate")
        url = build_url(
            self._base_url, self._base_path, (TENANTS, ("tenant_id", tenant_id), _FLOWS)
        )
        answer = await self._call(
            "POST",
            url,
            token=token,
            request_id=request_id,
            content=_ENCODER.encode(body),
            idempotency_key=_idempotency_key(idempotency_key),
        )
        return _decode_flow(answer)

    async def update_flow(
        self,
        tenant_id: str,
        flow_id: str,
        body: FlowUpdate,
        *,
        if_match: str | None = None,
        idempotency_key: str | None = None,
        token: Credential,
        request_id: str | None = None,
    ) -> Flow:
        """Replace a flow's fields; with ``if_match``, only if still that version (else 412)."""
        if not isinstance(body, FlowUpdate):
            raise TypeError("body must be a FlowUpdate")
        answer = await self._call(
            "PUT",
            self._flow_url(tenant_id, flow_id),
            token=token,
            request_id=request_id,
            content=_ENCODER.encode(body),
            idempotency_key=_idempotency_key(idempotency_key),
            if_match=if_match,
        )
        return _decode_flow(answer)

    async def delete_flow(
        self,
        tenant_id: str,
        flow_id: str,
        *,
        if_match: str | None = None,
        idempotency_key: str | None = None,
        token: Credential,
        request_id: str | None = None,
    ) -> None:
        """Delete a flow; with ``if_match`` only if it is still that version (else 412)."""
        await self._call(
            "DELETE",
            self._flow_url(tenant_id, flow_id),
            token=token,
            request_id=request_id,
            idempotency_key=_idempotency_key(idempotency_key),
            if_match=if_match,
        )

    # Catalogue

    async def list_clusters(
        self,
        tenant_id: str,
        *,
        token: Credential,
        request_id: str | None = None,
        retries: RetryConfig | None = None,
    ) -> list[Cluster]:
        """Every cluster of the tenant (all pages).

        ``retries`` replaces the client's retry policy for this call, as for the other two
        catalogue lists: a caller that can do without the answer asks for a single attempt.
        """
        return await collect(self, CLUSTERS, tenant_id, None, token, request_id, retries)

    async def list_ingesters(
        self,
        tenant_id: str,
        *,
        cluster_id: str | None = None,
        token: Credential,
        request_id: str | None = None,
        retries: RetryConfig | None = None,
    ) -> list[Ingester]:
        """Every endpoint (source receiver) of the tenant, optionally of one cluster (all pages)."""
        return await collect(self, INGESTERS, tenant_id, cluster_id, token, request_id, retries)

    async def list_destinations(
        self,
        tenant_id: str,
        *,
        cluster_id: str | None = None,
        token: Credential,
        request_id: str | None = None,
        retries: RetryConfig | None = None,
    ) -> list[Destination]:
        """Every target (delivery destination) of the tenant, optionally of one cluster."""
        return await collect(self, DESTINATIONS, tenant_id, cluster_id, token, request_id, retries)

    # Internals

    def _flow_url(self, tenant_id: str, flow_id: str) -> httpx.URL:
        return build_url(
            self._base_url,
            self._base_path,
            (TENANTS, ("tenant_id", tenant_id), _FLOWS, ("flow_id", flow_id)),
        )


def _idempotency_key(key: str | None) -> str:
    if key is None:
        return uuid.uuid4().hex
    return check_header_value("idempotency_key", key)


def _decode_flow(answer: Exchange) -> Flow:
    flow = decode(_FLOW, answer)
    # Never an "etag" member of the body: it is not in the contract, and would become a header.
    flow.etag = answer.headers.get("etag") or _version_etag(flow)
    return flow


def _version_etag(flow: Flow) -> str:
    return f'"{flow.version}"'
