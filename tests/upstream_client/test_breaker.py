from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
import respx

from tests.support.clock import FakeClock
from tests.upstream_client.conftest import FLOWS_PATH, TENANT, MakeClient, flow_json
from upstream_client import (
    APIConnectionError,
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    RetryConfig,
)

ONE_ATTEMPT = RetryConfig(max_attempts=1)
BREAKER = BreakerConfig(failure_threshold=3, open_seconds=30.0)


class Upstream:
    """An upstream whose next answer the test chooses; counts the requests it sees."""

    def __init__(self) -> None:
        self.answer: httpx.Response | Exception = httpx.Response(200, json=flow_json())
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def upstream(router: respx.Router) -> Upstream:
    upstream = Upstream()
    router.get(f"{FLOWS_PATH}/flow_1").mock(side_effect=upstream)
    return upstream


async def get(client: object) -> object:
    return await client.get_flow(TENANT, "flow_1", token="t")  # type: ignore[attr-defined]


async def test_opens_after_consecutive_failures_and_fails_fast(
    upstream: Upstream, make_client: MakeClient
) -> None:
    client = make_client(retries=ONE_ATTEMPT, breaker=BREAKER)
    upstream.answer = httpx.ConnectError("refused")
    for _ in range(3):
        with pytest.raises(APIConnectionError):
            await get(client)
    assert client.breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        await get(client)
    assert upstream.calls == 3


async def test_a_success_resets_the_failure_count(
    upstream: Upstream, make_client: MakeClient
) -> None:
    client = make_client(retries=ONE_ATTEMPT, breaker=BREAKER)
    for answer in [httpx.Response(503), httpx.Response(503), httpx.Response(200, json=flow_json())]:
        upstream.answer = answer
        with contextlib.suppress(InternalServerError):
            await get(client)
    upstream.answer = httpx.Response(502)
    for _ in range(2):
        with pytest.raises(InternalServerError):
            await get(client)
    assert client.breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(("status", "error"), [(404, NotFoundError), (429, RateLimitError)])
async def test_client_errors_never_open_it(
    upstream: Upstream, make_client: MakeClient, status: int, error: type[Exception]
) -> None:
    client = make_client(retries=ONE_ATTEMPT, breaker=BREAKER)
    upstream.answer = httpx.Response(status)
    for _ in range(10):
        with pytest.raises(error):
            await get(client)
    assert client.breaker.state is BreakerState.CLOSED
    assert upstream.calls == 10


async def test_retries_count_towards_opening(upstream: Upstream, make_client: MakeClient) -> None:
    client = make_client(retries=RetryConfig(max_attempts=5, jitter=0.0), breaker=BREAKER)
    upstream.answer = httpx.Response(503)
    with pytest.raises(InternalServerError):
        await get(client)
    assert upstream.calls == 3
    assert client.breaker.state is BreakerState.OPEN


async def test_half_open_probe_closes_on_success(
    upstream: Upstream, make_client: MakeClient, fake_time: FakeClock
) -> None:
    client = make_client(retries=ONE_ATTEMPT, breaker=BREAKER)
    upstream.answer = httpx.Response(503)
    for _ in range(3):
        with pytest.raises(InternalServerError):
            await get(client)
    fake_time.advance(29)
    with pytest.raises(CircuitOpenError):
        await get(client)
    fake_time.advance(1)
    assert client.breaker.state is BreakerState.HALF_OPEN
    upstream.answer = httpx.Response(200, json=flow_json())
    await get(client)
    assert client.breaker.state is BreakerState.CLOSED
    await get(client)
    assert upstream.calls == 5


async def test_half_open_probe_failure_reopens(
    upstream: Upstream, make_client: MakeClient, fake_time: FakeClock
) -> None:
    client = make_client(retries=ONE_ATTEMPT, breaker=BREAKER)
    upstream.answer = httpx.Response(503)
    for _ in range(3):
        with pytest.raises(InternalServerError):
            await get(client)
    fake_time.advance(30)
    with pytest.raises(InternalServerError):
        await get(client)
    assert client.breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        await get(client)
    assert upstream.calls == 4


async def test_half_open_lets_a_single_probe_through(
    upstream: Upstream, make_client: MakeClient, fake_time: FakeClock
) -> None:
    client = make_client(retries=ONE_ATTEMPT, breaker=BREAKER)
    upstream.answer = httpx.ConnectError("refused")
    for _ in range(3):
        with pytest.raises(APIConnectionError):
            await get(client)
    fake_time.advance(30)
    upstream.answer = httpx.Response(200, json=flow_json())
    upstream.gate = asyncio.Event()
    probe = asyncio.create_task(get(client))
    await asyncio.sleep(0)
    while upstream.calls < 4:
        await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await get(client)
    upstream.gate.set()
    await probe
    assert client.breaker.state is BreakerState.CLOSED
    assert upstream.calls == 4


async def test_a_cancelled_probe_frees_the_half_open_slot(
    upstream: Upstream, make_client: MakeClient, fake_time: FakeClock
) -> None:
    client = make_client(retries=ONE_ATTEMPT, breaker=BREAKER)
    upstream.answer = httpx.ConnectError("refused")
    for _ in range(3):
        with pytest.raises(APIConnectionError):
            await get(client)
    fake_time.advance(30)
    upstream.answer = httpx.Response(200, json=flow_json())
    upstream.gate = asyncio.Event()
    probe = asyncio.create_task(get(client))
    while upstream.calls < 4:
        await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    upstream.gate.set()
    await get(client)
    assert client.breaker.state is BreakerState.CLOSED


async def test_breakers_of_two_clients_are_independent(
    upstream: Upstream, make_client: MakeClient
) -> None:
    failing = make_client(retries=ONE_ATTEMPT, breaker=BREAKER)
    healthy = make_client(retries=ONE_ATTEMPT, breaker=BREAKER)
    upstream.answer = httpx.Response(503)
    for _ in range(3):
        with pytest.raises(InternalServerError):
            await get(failing)
    upstream.answer = httpx.Response(200, json=flow_json())
    await get(healthy)
    assert failing.breaker.state is BreakerState.OPEN
