"""The backend client: one instance per upstream base URL, shared by every user's calls."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Self, TypeVar

import httpx
import msgspec

from upstream_client._breaker import CircuitBreaker
from upstream_client._config import (
    DEFAULT_BREAKER,
    DEFAULT_LIMITS,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    BreakerConfig,
    Limits,
    RetryConfig,
    Timeout,
    TLSConfig,
)
from upstream_client._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    CircuitOpenError,
    ResponseTooLargeError,
    ResponseValidationError,
    status_error_class,
    translate_transport_errors,
)
from upstream_client._models import (
    Cluster,
    ClusterPage,
    Destination,
    DestinationPage,
    Flow,
    FlowCreate,
    FlowPage,
    FlowUpdate,
    Ingester,
    IngesterPage,
    Problem,
)
from upstream_client._observer import AttemptObserver
from upstream_client._retry import backoff_delay, parse_retry_after
from upstream_client._transport import AiohttpTransport, default_transport
from upstream_client._urls import build_url, check_header_value, check_id, normalise_base_url

_T = TypeVar("_T")
_P = TypeVar("_P")

_FLOW = msgspec.json.Decoder(Flow)
_FLOW_PAGE = msgspec.json.Decoder(FlowPage)
_CLUSTER_PAGE = msgspec.json.Decoder(ClusterPage)
_INGESTER_PAGE = msgspec.json.Decoder(IngesterPage)
_DESTINATION_PAGE = msgspec.json.Decoder(DestinationPage)
_PROBLEM = msgspec.json.Decoder(Problem)
_ENCODER = msgspec.json.Encoder()

_TENANTS = ("", "tenants")
_FLOWS = ("", "delivery-flows")

_USER_AGENT = "flows-upstream-client/0.1"


MAX_CATALOGUE_PAGES = 1000


class _Answer:
    """A read answer of one attempt. ``body`` is ``None`` when it exceeded the size cap."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes | None) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class BackendClient:
    """Async client of the backend flows API.

    One client serves many users: every call takes the caller's credential as ``token``
    (a bearer JWT or an API key ``zen_key_…``) and an optional ``request_id`` sent as
    ``X-Request-ID``. Ids are validated before any I/O (:class:`InvalidIdError`).

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

    def __init__(
        self,
        base_url: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retries: RetryConfig = DEFAULT_RETRIES,
        limits: Limits = DEFAULT_LIMITS,
        tls: TLSConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        breaker: BreakerConfig = DEFAULT_BREAKER,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        observer: AttemptObserver | None = None,
    ) -> None:
        self._base_url, self._base_path = normalise_base_url(base_url)
        self._timeout = timeout
        self._timeout_extension = {
            "connect": timeout.connect,
            "read": timeout.read,
            "write": timeout.write,
            "pool": timeout.pool,
        }
        self._retries = retries
        self._max_response_bytes = limits.max_response_bytes
        self._transport = transport if transport is not None else default_transport(limits, tls)
        # The default transport is reached without httpx's request and response objects.
        self._direct = self._transport if isinstance(self._transport, AiohttpTransport) else None
        self._breaker = CircuitBreaker(breaker, clock)
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random()
        self._observer = observer
        self._closed = False

    @property
    def base_url(self) -> str:
        """The upstream base URL, without a trailing slash."""
        return self._base_url

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker of this client (its ``state`` is useful for readiness checks)."""
        return self._breaker

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the transport and its connections; the client cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            await self._transport.aclose()

    async def ping(self) -> bool:
        """Whether the upstream's unauthenticated ``/healthz`` answers 2xx (readiness checks).

        One attempt, no retries, outside the circuit breaker's accounting, within
        ``timeout.connect + timeout.read``; an unreachable upstream raises ``APIConnectionError``.
        """
        url = httpx.URL(self._base_url + "/healthz")
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
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
        token: str,
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
            (_TENANTS, ("tenant_id", tenant_id), _FLOWS),
            tuple(params.items()),
        )
        answer = await self._call("GET", url, token=token, request_id=request_id)
        page = _decode(_FLOW_PAGE, answer)
        for flow in page.delivery_flows:
            flow.etag = _version_etag(flow)
        return page

    async def iter_flows(
        self,
        tenant_id: str,
        *,
        cluster_id: str | None = None,
        limit: int | None = None,
        token: str,
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
            cursor = _next_cursor(page.next_cursor, seen)
            if cursor is None:
                return

    async def get_flow(
        self, tenant_id: str, flow_id: str, *, token: str, request_id: str | None = None
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
        token: str,
        request_id: str | None = None,
    ) -> Flow:
        """Create a flow. Retries are safe: every attempt carries the same ``Idempotency-Key``."""
        if not isinstance(body, FlowCreate):
            raise TypeError("body must be a FlowCreate")
        url = build_url(
            self._base_url, self._base_path, (_TENANTS, ("tenant_id", tenant_id), _FLOWS)
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
        token: str,
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
        token: str,
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
        token: str,
        request_id: str | None = None,
        retries: RetryConfig | None = None,
    ) -> list[Cluster]:
        """Every cluster of the tenant (all pages).

        ``retries`` replaces the client's retry policy for this call, as for the other two
        catalogue lists: a caller that can do without the answer asks for a single attempt.
        """
        return await self._collect(
            tenant_id,
            "clusters",
            None,
            _CLUSTER_PAGE,
            lambda page: page.clusters,
            token,
            request_id,
            retries,
        )

    async def list_ingesters(
        self,
        tenant_id: str,
        *,
        cluster_id: str | None = None,
        token: str,
        request_id: str | None = None,
        retries: RetryConfig | None = None,
    ) -> list[Ingester]:
        """Every endpoint (source receiver) of the tenant, optionally of one cluster (all pages)."""
        return await self._collect(
            tenant_id,
            "ingesters",
            cluster_id,
            _INGESTER_PAGE,
            lambda page: page.ingesters,
            token,
            request_id,
            retries,
        )

    async def list_destinations(
        self,
        tenant_id: str,
        *,
        cluster_id: str | None = None,
        token: str,
        request_id: str | None = None,
        retries: RetryConfig | None = None,
    ) -> list[Destination]:
        """Every target (delivery destination) of the tenant, optionally of one cluster."""
        return await self._collect(
            tenant_id,
            "destinations",
            cluster_id,
            _DESTINATION_PAGE,
            lambda page: page.destinations,
            token,
            request_id,
            retries,
        )

    # Internals

    def _flow_url(self, tenant_id: str, flow_id: str) -> httpx.URL:
        return build_url(
            self._base_url,
            self._base_path,
            (_TENANTS, ("tenant_id", tenant_id), _FLOWS, ("flow_id", flow_id)),
        )

    async def _collect(
        self,
        tenant_id: str,
        collection: str,
        cluster_id: str | None,
        decoder: msgspec.json.Decoder[_P],
        items_of: Callable[[_P], list[_T]],
        token: str,
        request_id: str | None,
        retries: RetryConfig | None = None,
    ) -> list[_T]:
        params: dict[str, str | int] = {}
        if cluster_id is not None:
            params["cluster_id"] = check_id("cluster_id", cluster_id)
        segments = (_TENANTS, ("tenant_id", tenant_id), ("", collection))
        items: list[_T] = []
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            if cursor is not None:
                params["cursor"] = cursor
            url = build_url(self._base_url, self._base_path, segments, tuple(params.items()))
            answer = await self._call(
                "GET", url, token=token, request_id=request_id, retries=retries
            )
            page = _decode(decoder, answer)
            items.extend(items_of(page))
            cursor = _next_cursor(getattr(page, "next_cursor", None), seen)
            if cursor is None:
                return items
            if len(seen) >= MAX_CATALOGUE_PAGES:
                # Catalogue lists are small; an upstream that never stops paging is broken.
                raise ResponseValidationError(
                    f"{collection}: more than {MAX_CATALOGUE_PAGES} pages"
                )

    async def _call(
        self,
        method: str,
        url: httpx.URL,
        *,
        token: str,
        request_id: str | None,
        content: bytes | None = None,
        idempotency_key: str | None = None,
        if_match: str | None = None,
        retries: RetryConfig | None = None,
    ) -> _Answer:
        """Send one logical call, with retries, within the deadline; return a 2xx answer."""
        if self._closed:
            raise RuntimeError("the BackendClient is closed")
        headers = {
            "Accept": "application/json",
            # Compression costs the BFF CPU, its scarce resource; the upstream is close by.
            "Accept-Encoding": "identity",
            "User-Agent": _USER_AGENT,
            "Authorization": "Bearer " + check_header_value("token", token),
        }
        if request_id is not None:
            headers["X-Request-ID"] = check_header_value("request_id", request_id)
        if content is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if if_match is not None:
            headers["If-Match"] = check_header_value("if_match", if_match)
        # Every method we use is idempotent or carries an Idempotency-Key.
        retryable = method != "POST" or idempotency_key is not None
        deadline = self._clock() + self._timeout.total
        try:
            async with asyncio.timeout(self._timeout.total):
                return await self._attempts(
                    method, url, headers, content, request_id, retryable, deadline, retries
                )
        except TimeoutError as exc:
            raise APITimeoutError(
                f"{method} {url.path}: no answer within {self._timeout.total:g}s"
            ) from exc

    async def _attempts(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        content: bytes | None,
        request_id: str | None,
        retryable: bool,
        deadline: float,
        retries: RetryConfig | None,
    ) -> _Answer:
        retries = retries or self._retries
        error: APIConnectionError | APIStatusError | None = None
        for attempt in range(1, retries.max_attempts + 1):
            permit = self._breaker.acquire()
            if permit is None:
                if error is not None:
                    raise error
                raise CircuitOpenError(f"circuit open for {self._base_url}; nothing sent")
            retry_after: float | None = None
            try:
                answer = await self._attempt(method, url, headers, content, attempt)
            except APIConnectionError as exc:
                self._breaker.failure(permit)
                error = exc
            except BaseException:
                self._breaker.release(permit)
                raise
            else:
                if answer.status >= 500:
                    self._breaker.failure(permit)
                else:
                    self._breaker.success(permit)
                if 200 <= answer.status < 300:
                    if answer.body is None:
                        raise ResponseTooLargeError(
                            f"{method} {url.path}: body over {self._max_response_bytes} bytes"
                        )
                    return answer
                error = _status_error(method, url, answer, request_id)
                if answer.status not in retries.retry_statuses:
                    raise error
                retry_after = error.retry_after
            if not retryable or attempt == retries.max_attempts:
                raise error
            if retry_after is not None:
                if retry_after > retries.retry_after_max:
                    raise error
                delay = retry_after
            else:
                delay = backoff_delay(retries, attempt, self._rng)
            if self._clock() + delay >= deadline:
                raise error
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        content: bytes | None,
        attempt: int = 1,
    ) -> _Answer:
        headers = dict(headers)  # this attempt's own: the observer may add to them
        observer = self._observer
        started = (
            observer.attempt_started(method, url, headers, attempt)
            if observer is not None
            else None
        )
        status: int | None = None
        try:
            with translate_transport_errors():
                if self._direct is not None:
                    answer = await self._exchange(self._direct, method, url, headers, content)
                else:
                    answer = await self._through_httpx(method, url, headers, content)
            status = answer.status
        finally:
            if observer is not None:
                observer.attempt_ended(started, status)
        return answer

    async def _exchange(
        self,
        transport: AiohttpTransport,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        content: bytes | None,
    ) -> _Answer:
        got = await transport.exchange(
            method,
            str(url),
            headers,
            content,
            timeout=self._timeout,
            max_body_bytes=self._max_response_bytes,
        )
        if not got.encoded or got.body is None:
            return _Answer(got.status, got.headers, got.body)
        # Encoded although we asked for identity: decoded, and capped, as httpx decodes it.
        response = httpx.Response(got.status, headers=list(got.headers.items()), content=got.body)
        return _Answer(got.status, got.headers, await self._read_capped(response))

    async def _through_httpx(
        self, method: str, url: httpx.URL, headers: dict[str, str], content: bytes | None
    ) -> _Answer:
        request = httpx.Request(
            method,
            url,
            headers=headers,
            content=content,
            extensions={"timeout": self._timeout_extension},
        )
        response = await self._transport.handle_async_request(request)
        try:
            body = await self._read_capped(response)
        finally:
            await response.aclose()
        return _Answer(response.status_code, response.headers, body)

    async def _read_capped(self, response: httpx.Response) -> bytes | None:
        cap = self._max_response_bytes
        headers = response.headers
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return None
        chunks: AsyncIterator[bytes] | httpx.AsyncByteStream
        if headers.get("content-encoding", "identity") == "identity" and isinstance(
            response.stream, httpx.AsyncByteStream
        ):
            # Reading the transport's stream directly skips httpx's decoder chain.
            chunks = response.stream
        else:
            # Counting decoded bytes also caps a compression bomb.
            chunks = response.aiter_bytes()
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > cap:
                return None
            parts.append(chunk)
        return b"".join(parts)


def _idempotency_key(key: str | None) -> str:
    if key is None:
        return uuid.uuid4().hex
    return check_header_value("idempotency_key", key)


def _next_cursor(cursor: str | None, seen: set[str]) -> str | None:
    """The cursor of the next page; an upstream that hands out a cursor twice is broken."""
    if cursor is None:
        return None
    if cursor in seen:
        raise ResponseValidationError("the upstream returned the same page cursor twice")
    seen.add(cursor)
    return cursor


def _decode(decoder: msgspec.json.Decoder[_T], answer: _Answer) -> _T:
    try:
        return decoder.decode(answer.body or b"")
    # RecursionError: nesting deeper than the decoder allows, even inside an ignored field.
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ResponseValidationError(f"body does not match the contract: {exc}") from exc


def _decode_flow(answer: _Answer) -> Flow:
    flow = _decode(_FLOW, answer)
    # Never an "etag" member of the body: it is not in the contract, and would become a header.
    flow.etag = answer.headers.get("etag") or _version_etag(flow)
    return flow


def _version_etag(flow: Flow) -> str:
    return f'"{flow.version}"'


def _status_error(
    method: str, url: httpx.URL, answer: _Answer, request_id: str | None
) -> APIStatusError:
    problem: Problem | None = None
    if answer.body:
        try:
            problem = _PROBLEM.decode(answer.body)
        except (msgspec.DecodeError, RecursionError):
            problem = None
    headers = (
        answer.headers
        if isinstance(answer.headers, httpx.Headers)
        else httpx.Headers(list(answer.headers.items()))
    )
    sent_id = headers.get("x-request-id") or (problem.instance if problem else None) or request_id
    summary = f"{method} {url.path}: {answer.status}"
    if problem is not None:
        summary += f" {problem.title}" + (f": {problem.detail}" if problem.detail else "")
    cls = status_error_class(answer.status)
    return cls(
        summary,
        status_code=answer.status,
        problem=problem,
        request_id=sent_id,
        retry_after=parse_retry_after(headers.get("retry-after"), time.time()),
        headers=headers,
    )
