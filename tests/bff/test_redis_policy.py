"""What the gateway does when Redis is slow or away: bounded waits, sessions fail closed, the rate
limit falls back to this instance, and an idle invalidation channel stays subscribed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import httpx
import pytest
import respx

from bff import create_app
from bff.auth import static_authenticator
from bff.state.invalidation import RedisInvalidation
from tests.support.clock import FakeClock
from tests.support.gateway import ALICE, BFF, FLOWS, NO_IDP, UP_FLOWS, in_process, make_settings
from tests.support.keys import redis_sessions
from tests.support.redis import RedisServer
from tests.support.silent import silent_listener

TIMEOUT = 0.5


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A Redis URL whose server accepts connections and never says a word."""
    with silent_listener() as port:
        yield f"redis://127.0.0.1:{port}/0"


def _settings(redis_url: str, **bff: object) -> object:
    return make_settings(
        bff={"rate_limit_per_minute": 600, **bff},
        sessions=redis_sessions(redis_url, redis_timeout_seconds=TIMEOUT),
    )


async def test_with_redis_silent_the_api_stays_up_and_the_limit_is_kept_per_instance(
    black_hole: str, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    caplog.set_level(logging.WARNING, logger="bff.rate_limit")
    async with in_process(
        httpx.MockTransport(upstream.async_handler),
        authenticators=[static_authenticator(ALICE)],
        settings=_settings(black_hole),  # type: ignore[arg-type]
    ) as running:
        started = time.monotonic()
        answers = [await running.client.get(FLOWS) for _ in range(3)]
        took = time.monotonic() - started
        metrics = (await running.client.get("/metrics")).text
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    # Each call waits for Redis at most about the timeout (connect, or answer, or a connection).
    assert took < 3 * (TIMEOUT * 2 + 0.5), took
    assert "bff_rate_limit_fallbacks_total 3.0" in metrics
    warnings = [r.getMessage() for r in caplog.records if r.name == "bff.rate_limit"]
    assert len(warnings) == 1 and "counting per instance" in warnings[0], warnings


async def test_the_fallback_limit_still_limits(black_hole: str, upstream: respx.MockRouter) -> None:
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    async with in_process(
        httpx.MockTransport(upstream.async_handler),
        authenticators=[static_authenticator(ALICE)],
        settings=_settings(black_hole, rate_limit_per_minute=2),  # type: ignore[arg-type]
        clock=FakeClock(),  # the minute does not turn between the calls
    ) as running:
        statuses = [(await running.client.get(FLOWS)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_with_redis_silent_a_session_call_fails_closed_within_the_timeout(
    black_hole: str, upstream: respx.MockRouter
) -> None:
    app = create_app(
        _settings(black_hole),  # type: ignore[arg-type]
        upstream_transport=httpx.MockTransport(upstream.async_handler),
        idp_transport=NO_IDP,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BFF) as client,
    ):
        started = time.monotonic()
        answer = await client.get(
            FLOWS, headers={"Cookie": "bff_session=" + "a" * 43, "X-CSRF": "1"}
        )
        took = time.monotonic() - started
        ready = await client.get("/readyz")
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"]
    assert took < TIMEOUT * 3 + 0.5, took
    assert len(upstream.calls) == 0
    assert ready.status_code == 503
    assert ready.json()["checks"]["sessions"].startswith("failing")


@pytest.mark.redis
async def test_an_idle_invalidation_channel_outlives_the_redis_timeout(
    redis_server: RedisServer, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bff.invalidation")
    async with in_process(
        httpx.MockTransport(upstream.async_handler),
        authenticators=[static_authenticator(ALICE)],
        settings=_settings(redis_server.url),  # type: ignore[arg-type]
    ) as running:
        invalidation = running.app.state.services.invalidation
        assert isinstance(invalidation, RedisInvalidation)
        await asyncio.wait_for(invalidation.subscribed.wait(), timeout=5)
        await asyncio.sleep(TIMEOUT * 4)  # no message for longer than the socket timeout
        assert invalidation.subscribed.is_set()
    assert not [r for r in caplog.records if r.name == "bff.invalidation"], caplog.text
