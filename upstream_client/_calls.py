"""How one call reaches the upstream: the client's settings and transport, the attempts.

:class:`BaseClient` holds what every call of :class:`~upstream_client.BackendClient` shares
(settings, transport, circuit breaker, observer) and turns a method, URL and credential into a
2xx :class:`~upstream_client._transport.Exchange` or an exception of the tree: it builds the
headers, bounds the call by ``Timeout.total``, asks the breaker before every attempt, retries,
tells the :class:`AttemptObserver` of each attempt and sends it through the default transport's
``exchange`` or any other transport's ``handle_async_request``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
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
from upstream_client._dpop import Credential, DPoPToken, asks_for_nonce, with_proof
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
from upstream_client._models import Problem
from upstream_client._observer import AttemptObserver
from upstream_client._retry import backoff_delay, parse_retry_after
from upstream_client._transport import (
    AiohttpTransport,
    Exchange,
    default_transport,
    exchange_through_httpx,
)
from upstream_client._urls import check_header_value, normalise_base_url

_T = TypeVar("_T")

_PROBLEM = msgspec.json.Decoder(Problem)

USER_AGENT = "flows-upstream-client/0.1"


class BaseClient:
    """What every call of a client shares, and how one call is made.

    The settings, transport, circuit breaker and observer, the client's lifecycle, and
    ``_call``: one call of the API (headers, deadline, attempts, retries). Its subclass
    :class:`~upstream_client.BackendClient` documents the arguments and adds the API's calls.
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
        self._dpop_nonce: str | None = None
        """The backend's latest ``DPoP-Nonce`` (RFC 9449 9)."""
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

    async def _call(
        self,
        method: str,
        url: httpx.URL,
        *,
        token: Credential,
        request_id: str | None,
        content: bytes | None = None,
        idempotency_key: str | None = None,
        if_match: str | None = None,
        retries: RetryConfig | None = None,
    ) -> Exchange:
        """Send one logical call, with retries, within the deadline; return a 2xx answer."""
        if self._closed:
            raise RuntimeError("the BackendClient is closed")
        if isinstance(token, DPoPToken):
            dpop, authorization = token, "DPoP " + check_header_value("token", token.access_token)
        else:
            dpop, authorization = None, "Bearer " + check_header_value("token", token)
        headers = {
            "Accept": "application/json",
            # Compression costs the BFF CPU, its scarce resource; the upstream is close by.
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
            "Authorization": authorization,
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
                    method, url, headers, content, request_id, retryable, deadline, retries, dpop
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
        dpop: DPoPToken | None = None,
    ) -> Exchange:
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
                if dpop is None:
                    answer = await self._attempt(method, url, headers, content, attempt)
                else:
                    answer = await self._proved_attempt(
                        method, url, headers, content, attempt, dpop
                    )
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

    async def _proved_attempt(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        content: bytes | None,
        attempt: int,
        dpop: DPoPToken,
    ) -> Exchange:
        """One attempt with a fresh proof of ``dpop``'s key; once more, with a new proof, when
        the backend asks for its newer nonce."""
        answer = await self._attempt(
            method, url, with_proof(headers, method, url, dpop, self._dpop_nonce), content, attempt
        )
        asked = asks_for_nonce(answer.status, answer.headers)
        self._dpop_nonce = answer.headers.get("dpop-nonce") or self._dpop_nonce
        if asked:
            answer = await self._attempt(
                method,
                url,
                with_proof(headers, method, url, dpop, self._dpop_nonce),
                content,
                attempt,
            )
            self._dpop_nonce = answer.headers.get("dpop-nonce") or self._dpop_nonce
        return answer

    async def _attempt(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        content: bytes | None,
        attempt: int = 1,
    ) -> Exchange:
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
                direct = self._direct
                if direct is not None:
                    answer = await direct.exchange(
                        method,
                        str(url),
                        headers,
                        content,
                        timeout=self._timeout,
                        max_body_bytes=self._max_response_bytes,
                    )
                else:
                    answer = await exchange_through_httpx(
                        self._transport,
                        method,
                        url,
                        headers,
                        content,
                        timeout=self._timeout_extension,
                        max_body_bytes=self._max_response_bytes,
                    )
            status = answer.status
        finally:
            if observer is not None:
                observer.attempt_ended(started, status)
        return answer


def decode(decoder: msgspec.json.Decoder[_T], answer: Exchange) -> _T:
    """The body of a 2xx answer as the contract's type, else :class:`ResponseValidationError`."""
    try:
        return decoder.decode(answer.body or b"")
    # RecursionError: nesting deeper than the decoder allows, even inside an ignored field.
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ResponseValidationError(f"body does not match the contract: {exc}") from exc


def _status_error(
    method: str, url: httpx.URL, answer: Exchange, request_id: str | None
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
