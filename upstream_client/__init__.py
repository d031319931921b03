"""A typed, fault-aware async client of the backend flows API (``/v1/tenants/{tid}/…``).

Usage::

    from upstream_client import BackendClient, FlowCreate, PreconditionFailedError

    async with BackendClient("https://backend.internal") as client:
        page = await client.list_flows("ten_acme", cluster_id="plane_dev_us_east_1", token=token)
        flow = await client.create_flow(
            "ten_acme",
            FlowCreate(
                name="stripe-to-app",
                cluster_id="plane_dev_us_east_1",
                source_id="ing_stripe_prod",
                destination_id="dest_orders_api",
            ),
            token=token,
            request_id="req_123",
        )
        try:
            await client.delete_flow("ten_acme", flow.id, if_match=flow.etag, token=token)
        except PreconditionFailedError:
            ...  # someone changed the flow since we read it

One client serves every user: the credential (``token=``, a bearer JWT, an API key
``zen_key_…``, or a :class:`DPoPToken`: a token bound to a key, sent with a fresh proof per
attempt) travels with each call. Retries, idempotency keys, the per-call deadline
(``Timeout.total``), the circuit breaker and the response size cap are built in; ids are
validated before any I/O (:class:`InvalidIdError`, a ``ValueError``). An
:class:`AttemptObserver` passed as ``observer=`` sees every attempt (to add trace headers, to time
it).

Exceptions::

    UpstreamError
    ├── APIConnectionError            the upstream could not be reached or stopped answering
    │   ├── APITimeoutError           a step of an attempt, or the call's deadline, ran out
    │   └── CircuitOpenError          the circuit breaker fails fast without any network I/O
    ├── APIStatusError                a non-2xx answer: status_code, problem, request_id,
    │   │                             retry_after, headers
    │   ├── BadRequestError           400
    │   ├── AuthenticationError       401
    │   ├── PermissionDeniedError     403 (required_scope)
    │   ├── NotFoundError             404
    │   ├── ConflictError             409
    │   ├── PreconditionFailedError   412
    │   ├── UnprocessableEntityError  422
    │   ├── RateLimitError            429 (retry_after)
    │   └── InternalServerError       every 5xx
    └── ResponseValidationError       a 2xx body that does not match the contract
        └── ResponseTooLargeError     a body larger than ``Limits.max_response_bytes``

Any other non-2xx status raises ``APIStatusError`` itself.
"""

from __future__ import annotations

from upstream_client._breaker import BreakerState
from upstream_client._client import BackendClient
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
from upstream_client._dpop import Credential, DPoPToken, ProofKey
from upstream_client._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    RateLimitError,
    ResponseTooLargeError,
    ResponseValidationError,
    UnprocessableEntityError,
    UpstreamError,
)
from upstream_client._models import (
    Cluster,
    Destination,
    Flow,
    FlowConfig,
    FlowCreate,
    FlowPage,
    FlowUpdate,
    Ingester,
    Problem,
    ProblemFieldError,
    RetryPolicy,
)
from upstream_client._observer import AttemptObserver
from upstream_client._urls import InvalidIdError

__all__ = [
    "DEFAULT_BREAKER",
    "DEFAULT_LIMITS",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AttemptObserver",
    "AuthenticationError",
    "BackendClient",
    "BadRequestError",
    "BreakerConfig",
    "BreakerState",
    "CircuitOpenError",
    "Cluster",
    "ConflictError",
    "Credential",
    "DPoPToken",
    "Destination",
    "Flow",
    "FlowConfig",
    "FlowCreate",
    "FlowPage",
    "FlowUpdate",
    "Ingester",
    "InternalServerError",
    "InvalidIdError",
    "Limits",
    "NotFoundError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "Problem",
    "ProblemFieldError",
    "ProofKey",
    "RateLimitError",
    "ResponseTooLargeError",
    "ResponseValidationError",
    "RetryConfig",
    "RetryPolicy",
    "TLSConfig",
    "Timeout",
    "UnprocessableEntityError",
    "UpstreamError",
]
