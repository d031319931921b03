from __future__ import annotations

import gzip
from typing import Any

import httpx
import pytest

from tests.support.backend import TENANT, MakeClient
from upstream_client import (
    DEFAULT_BREAKER,
    DEFAULT_LIMITS,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    BreakerConfig,
    Limits,
    ResponseValidationError,
    RetryConfig,
    Timeout,
)


def test_defaults_are_the_documented_values() -> None:
    assert Timeout() == DEFAULT_TIMEOUT
    assert DEFAULT_TIMEOUT.total >= DEFAULT_TIMEOUT.read
    assert RetryConfig() == DEFAULT_RETRIES
    assert DEFAULT_RETRIES.retry_statuses == frozenset({408, 429, 502, 503, 504})
    assert Limits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_response_bytes == 4 * 1024 * 1024
    assert BreakerConfig() == DEFAULT_BREAKER


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (Timeout, {"total": 0}),
        (Timeout, {"connect": -1}),
        (RetryConfig, {"max_attempts": 0}),
        (RetryConfig, {"jitter": 1.5}),
        (RetryConfig, {"backoff_base": -1}),
        (BreakerConfig, {"failure_threshold": 0}),
        (BreakerConfig, {"window_seconds": 0}),
        (BreakerConfig, {"open_seconds": -1}),
        (BreakerConfig, {"open_seconds": 10, "max_open_seconds": 5}),
        (BreakerConfig, {"half_open_probes": 0}),
        (Limits, {"max_connections": 0}),
        (Limits, {"max_response_bytes": 0}),
    ],
)
def test_invalid_values_are_refused(factory: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        factory(**kwargs)


def test_config_objects_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_TIMEOUT.total = 1.0  # type: ignore[misc]


async def test_a_broken_compressed_body_is_a_validation_error(make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        broken = b"this is not gzip" + gzip.compress(b"{}")
        return httpx.Response(200, content=broken, headers={"Content-Encoding": "gzip"})

    client = make_client(transport=httpx.MockTransport(handler))
    with pytest.raises(ResponseValidationError) as caught:
        await client.get_flow(TENANT, "flow_1", token="t")
    assert isinstance(caught.value.__cause__, httpx.DecodingError)
