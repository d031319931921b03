"""Exceptions raised by the backend client, and the one place transport errors are translated.

The tree is drawn once, in the package docstring (``upstream_client.__doc__``); a test keeps
it equal to the classes below.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aiohttp
import httpx

from upstream_client._models import Problem


class UpstreamError(Exception):
    """Base of every error of the backend client."""


class APIConnectionError(UpstreamError):
    """The upstream could not be reached, or the connection broke before a full answer."""


class APITimeoutError(APIConnectionError):
    """An attempt's network step or the call's overall deadline ran out."""


class CircuitOpenError(APIConnectionError):
    """The circuit breaker is open: the call failed fast, nothing was sent."""


class ResponseValidationError(UpstreamError):
    """A successful answer whose body does not match the backend contract."""


class ResponseTooLargeError(ResponseValidationError):
    """The answer's body exceeded ``Limits.max_response_bytes``."""


class APIStatusError(UpstreamError):
    """The upstream answered with a status outside 2xx.

    ``problem`` is the decoded problem document (``None`` when the body was not one),
    ``request_id`` the upstream's ``X-Request-ID`` (or the problem's ``instance``),
    ``retry_after`` the parsed ``Retry-After`` in seconds, whatever the status.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        problem: Problem | None,
        request_id: str | None,
        retry_after: float | None,
        headers: httpx.Headers,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.problem = problem
        self.request_id = request_id
        self.retry_after = retry_after
        self.headers = headers


class BadRequestError(APIStatusError):
    """400: the upstream refused the request (validation error, bad cursor)."""


class AuthenticationError(APIStatusError):
    """401: the credential is missing, invalid or expired."""


class PermissionDeniedError(APIStatusError):
    """403: the credential lacks a scope (``required_scope``) or the tenant."""

    @property
    def required_scope(self) -> str | None:
        """The scope the upstream asked for, when it said."""
        return self.problem.required_scope if self.problem is not None else None


class NotFoundError(APIStatusError):
    """404: no such resource for this tenant."""


class ConflictError(APIStatusError):
    """409: a name already taken, or the same idempotency key still in flight."""


class PreconditionFailedError(APIStatusError):
    """412: ``If-Match`` no longer matches; someone else changed the flow."""


class UnprocessableEntityError(APIStatusError):
    """422: an idempotency key reused with a different request."""


class RateLimitError(APIStatusError):
    """429: too many requests; see ``retry_after``."""


class InternalServerError(APIStatusError):
    """Any 5xx answer; ``status_code`` tells which."""


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The exception class of a non-2xx status."""
    if status_code >= 500:
        return InternalServerError
    return _STATUS_ERRORS.get(status_code, APIStatusError)


@contextlib.contextmanager
def translate_transport_errors() -> Iterator[None]:
    """Turn every transport-level failure into an :class:`APIConnectionError`.

    The single translation point of the package: httpx errors from any transport, and aiohttp
    or OS errors that a transport let through. A body that cannot be decoded (broken
    compression) is a :class:`ResponseValidationError`.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        # httpx-aiohttp reports every aiohttp connection failure (a refused or dropped
        # connection) as ConnectTimeout; only a real aiohttp timeout is a timeout.
        cause = exc.__cause__
        if isinstance(cause, aiohttp.ClientError) and not isinstance(
            cause, aiohttp.ServerTimeoutError
        ):
            raise APIConnectionError(f"connection failed: {cause!r}") from exc
        raise APITimeoutError(f"timed out: {exc!r}") from exc
    except TimeoutError as exc:
        raise APITimeoutError(f"timed out: {exc!r}") from exc
    except httpx.DecodingError as exc:
        raise ResponseValidationError(f"undecodable body: {exc!r}") from exc
    except (httpx.HTTPError, httpx.StreamError, aiohttp.ClientError, OSError) as exc:
        raise APIConnectionError(f"connection failed: {exc!r}") from exc
