"""Anyone can start a sign-in: a flood of them must not push out the sign-ins of others.

The gateway sits behind a trusted proxy here (127.0.0.1, the test client), so each browser's
address is the one its ``X-Forwarded-For`` names.
"""

from __future__ import annotations

from typing import Any

import pytest
import respx
from redis import Redis

from tests.support.cookies import Browser
from tests.support.gateway import LOGIN
from tests.support.keys import redis_sessions
from tests.support.redis import RedisServer
from tests.support.signin import Harness, auth_settings, running_app

VICTIM, ATTACKER = "198.51.100.7", "203.0.113.66"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {"backend": "memory"}
    server: RedisServer = request.getfixturevalue("redis_server")
    # The counts of earlier tests in the same window must not count against this one.
    with Redis.from_url(server.url) as redis:
        redis.flushdb()
    return redis_sessions(server.url)


async def _start(browser: Browser, address: str) -> int:
    response = await browser.get(
        LOGIN, params={"returnTo": "/"}, headers={"X-Forwarded-For": address}
    )
    return response.status_code


async def _finish(harness: Harness, browser: Browser, address: str, user: str) -> None:
    start = await browser.get(LOGIN, params={"returnTo": "/"}, headers={"X-Forwarded-For": address})
    assert start.status_code == 302, start.text
    callback = await browser.get(harness.provider.authorize(start.headers["location"], user))
    assert callback.status_code == 302, callback.text
    assert callback.headers["location"] == "/"


async def test_one_address_cannot_start_more_than_its_share(
    upstream: respx.MockRouter, backend: dict[str, Any]
) -> None:
    settings = auth_settings(
        bff={"trusted_proxies": ["127.0.0.1"]},
        sessions={**backend, "max_pending_sign_ins_per_client": 5},
    )
    async with running_app(upstream, settings=settings) as harness:
        victim = harness.browser()
        first = await victim.get(
            LOGIN, params={"returnTo": "/"}, headers={"X-Forwarded-For": VICTIM}
        )
        flood = [await _start(harness.browser(), ATTACKER) for _ in range(30)]
        # The victim's pending sign-in survived the flood and completes.
        callback = await victim.get(harness.provider.authorize(first.headers["location"], "alice"))
        # Others still sign in.
        await _finish(harness, harness.browser(), "198.51.100.8", "bob")
        refused = await harness.browser().get(
            LOGIN, params={"returnTo": "/"}, headers={"X-Forwarded-For": ATTACKER}
        )
        metrics = (await harness.client.get("/metrics")).text
    assert flood == [302] * 5 + [429] * 25
    assert callback.status_code == 302 and callback.headers["location"] == "/"
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert refused.json()["type"].endswith("/rate-limited")
    assert 'bff_sign_ins_total{outcome="refused",reason="rate-limited"} 26.0' in metrics


async def test_past_the_total_new_sign_ins_wait_and_pending_ones_complete(
    upstream: respx.MockRouter, backend: dict[str, Any]
) -> None:
    settings = auth_settings(
        bff={"trusted_proxies": ["127.0.0.1"]},
        sessions={**backend, "max_pending_sign_ins": 10},
    )
    async with running_app(upstream, settings=settings) as harness:
        victim = harness.browser()
        first = await victim.get(
            LOGIN, params={"returnTo": "/"}, headers={"X-Forwarded-For": VICTIM}
        )
        flood = [await _start(harness.browser(), f"203.0.113.{n}") for n in range(1, 21)]
        callback = await victim.get(harness.provider.authorize(first.headers["location"], "alice"))
    assert flood == [302] * 9 + [429] * 11
    assert callback.status_code == 302 and callback.headers["location"] == "/"
