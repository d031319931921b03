from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
import respx

from tests.support.backend import FLOWS_PATH, TENANT, MakeClient, flow_json
from tests.support.clock import FakeClock
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
from upstream_client._breaker import CircuitBreaker

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


# --- the policy itself, on a clock the test moves ------------------------------------------


def _breaker(**config: float) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(BreakerConfig(**config), clock), clock  # type: ignore[arg-type]


def _fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = breaker.acquire()
        assert permit is not None
        breaker.failure(permit)


def test_failures_older_than_the_window_do_not_count() -> None:
    breaker, clock = _breaker(failure_threshold=3, window_seconds=10)
    _fail(breaker, 2)
    clock.advance(11)
    _fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    _fail(breaker)
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened == 1


def test_a_success_forgets_the_failures_before_it() -> None:
    breaker, _ = _breaker(failure_threshold=3)
    _fail(breaker, 2)
    permit = breaker.acquire()
    assert permit is not None
    breaker.success(permit)
    _fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED


def test_the_default_open_time_is_short_and_grows_while_probes_fail() -> None:
    breaker, clock = _breaker(failure_threshold=1, open_seconds=1, max_open_seconds=5)
    _fail(breaker)
    waits = []
    for _ in range(5):
        waits.append(breaker.retry_in)
        assert breaker.acquire() is None
        clock.advance(breaker.retry_in)
        assert breaker.state is BreakerState.HALF_OPEN
        _fail(breaker)  # the probe fails: open again, for longer
    assert waits == [1, 2, 4, 5, 5]
    clock.advance(breaker.retry_in)
    permit = breaker.acquire()
    assert permit is not None and permit.probe
    breaker.success(permit)
    assert breaker.state is BreakerState.CLOSED
    # Closed again, a new outage starts from the short open time.
    _fail(breaker)
    assert breaker.retry_in == 1


def test_half_open_lets_the_configured_probes_through_and_needs_them_all() -> None:
    breaker, clock = _breaker(failure_threshold=1, open_seconds=1, half_open_probes=2)
    _fail(breaker)
    clock.advance(1)
    first, second = breaker.acquire(), breaker.acquire()
    assert first is not None and second is not None and first.probe and second.probe
    assert breaker.acquire() is None
    breaker.success(first)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.success(second)
    assert breaker.state is BreakerState.CLOSED


def test_an_answer_to_a_call_sent_before_the_circuit_opened_does_not_close_it() -> None:
    breaker, _ = _breaker(failure_threshold=2)
    early = breaker.acquire()
    assert early is not None
    _fail(breaker, 2)
    assert breaker.state is BreakerState.OPEN
    breaker.success(early)
    assert breaker.state is BreakerState.OPEN


def test_a_failed_probe_among_several_reopens_and_late_successes_do_not_close() -> None:
    breaker, clock = _breaker(failure_threshold=1, open_seconds=1, half_open_probes=2)
    _fail(breaker)
    clock.advance(1)
    first, second = breaker.acquire(), breaker.acquire()
    assert first is not None and second is not None
    breaker.failure(first)
    assert breaker.state is BreakerState.OPEN and breaker.retry_in == 2
    breaker.success(second)
    assert breaker.state is BreakerState.OPEN
