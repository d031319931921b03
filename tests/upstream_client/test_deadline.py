from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from tests.support.backend import FLOWS_PATH, TENANT, MakeClient, flow_json
from upstream_client import APITimeoutError, BreakerConfig, RetryConfig, Timeout


async def test_a_silent_upstream_is_cut_at_the_deadline(
    router: respx.Router, make_client: MakeClient
) -> None:
    calls = 0

    async def hang(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(30)
        return httpx.Response(200, json=flow_json())

    router.get(f"{FLOWS_PATH}/flow_1").mock(side_effect=hang)
    client = make_client(timeout=Timeout(total=0.1))
    started = time.perf_counter()
    with pytest.raises(APITimeoutError, match=r"within 0\.1s"):
        await client.get_flow(TENANT, "flow_1", token="t")
    assert time.perf_counter() - started < 2
    assert calls == 1


class DrippingStream(httpx.AsyncByteStream):
    """A body that never ends: one byte at a time, each well within any read timeout."""

    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"id":'
        while True:
            await asyncio.sleep(0.01)
            yield b" "

    async def aclose(self) -> None:
        self.closed = True


class DrippingTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.streams: list[DrippingStream] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        stream = DrippingStream()
        self.streams.append(stream)
        return httpx.Response(200, stream=stream, request=request)


async def test_a_dripping_body_does_not_outlive_the_deadline(make_client: MakeClient) -> None:
    transport = DrippingTransport()
    client = make_client(transport=transport, timeout=Timeout(read=5.0, total=0.2))
    started = time.perf_counter()
    with pytest.raises(APITimeoutError):
        await client.get_flow(TENANT, "flow_1", token="t")
    assert time.perf_counter() - started < 2
    assert len(transport.streams) == 1
    assert transport.streams[0].closed


async def test_the_deadline_covers_every_attempt(
    router: respx.Router, make_client: MakeClient
) -> None:
    calls = 0

    async def slow_failure(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return httpx.Response(503)

    router.get(f"{FLOWS_PATH}/flow_1").mock(side_effect=slow_failure)
    client = make_client(
        timeout=Timeout(total=0.25),
        retries=RetryConfig(max_attempts=10, backoff_base=0.0, jitter=0.0),
        breaker=BreakerConfig(failure_threshold=100),
        sleep=asyncio.sleep,
        clock=time.monotonic,
    )
    started = time.perf_counter()
    with pytest.raises(APITimeoutError):
        await client.get_flow(TENANT, "flow_1", token="t")
    # Ten slow attempts would take a second; the deadline ends the call during the third.
    assert time.perf_counter() - started < 0.9
    assert 2 <= calls <= 3


async def test_per_attempt_timeouts_are_handed_to_the_transport(
    router: respx.Router, make_client: MakeClient
) -> None:
    route = router.get(f"{FLOWS_PATH}/flow_1").mock(
        return_value=httpx.Response(200, json=flow_json())
    )
    client = make_client(timeout=Timeout(connect=1.5, read=2.5, write=3.5, pool=4.5, total=9))
    await client.get_flow(TENANT, "flow_1", token="t")
    assert route.calls.last.request.extensions["timeout"] == {
        "connect": 1.5,
        "read": 2.5,
        "write": 3.5,
        "pool": 4.5,
    }
