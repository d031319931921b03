from __future__ import annotations

import upstream_client

DOCUMENTED = {
    "BackendClient",
    # configuration
    "Timeout",
    "RetryConfig",
    "BreakerConfig",
    "Limits",
    "TLSConfig",
    "DEFAULT_TIMEOUT",
    "DEFAULT_RETRIES",
    "DEFAULT_BREAKER",
    "DEFAULT_LIMITS",
    "BreakerState",
    "AttemptObserver",
    # credentials
    "Credential",
    "DPoPToken",
    "ProofKey",
    # models
    "Flow",
    "FlowCreate",
    "FlowUpdate",
    "FlowConfig",
    "RetryPolicy",
    "FlowPage",
    "Cluster",
    "Ingester",
    "Destination",
    "Problem",
    "ProblemFieldError",
    # errors
    "InvalidIdError",
    "UpstreamError",
    "APIConnectionError",
    "APITimeoutError",
    "CircuitOpenError",
    "APIStatusError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "PreconditionFailedError",
    "UnprocessableEntityError",
    "RateLimitError",
    "InternalServerError",
    "ResponseValidationError",
    "ResponseTooLargeError",
}


def test_all_is_exactly_the_documented_api() -> None:
    assert set(upstream_client.__all__) == DOCUMENTED
    assert len(upstream_client.__all__) == len(DOCUMENTED)
    # Sorted as ruff sorts __all__: constants first, then the rest alphabetically.
    assert upstream_client.__all__ == sorted(
        upstream_client.__all__, key=lambda name: (not name.isupper(), name)
    )
    for name in upstream_client.__all__:
        assert getattr(upstream_client, name) is not None


def test_every_exported_error_is_named_in_the_module_docstring() -> None:
    doc = upstream_client.__doc__ or ""
    for name in upstream_client.__all__:
        obj = getattr(upstream_client, name)
        if isinstance(obj, type) and issubclass(obj, upstream_client.UpstreamError):
            assert name in doc


def test_exception_tree() -> None:
    uc = upstream_client
    assert issubclass(uc.APITimeoutError, uc.APIConnectionError)
    assert issubclass(uc.CircuitOpenError, uc.APIConnectionError)
    assert issubclass(uc.APIConnectionError, uc.UpstreamError)
    for name in (
        "BadRequestError",
        "AuthenticationError",
        "PermissionDeniedError",
        "NotFoundError",
        "ConflictError",
        "PreconditionFailedError",
        "UnprocessableEntityError",
        "RateLimitError",
        "InternalServerError",
    ):
        assert issubclass(getattr(uc, name), uc.APIStatusError)
    assert issubclass(uc.APIStatusError, uc.UpstreamError)
    assert issubclass(uc.ResponseTooLargeError, uc.ResponseValidationError)
    assert issubclass(uc.ResponseValidationError, uc.UpstreamError)
    assert issubclass(uc.InvalidIdError, ValueError)
