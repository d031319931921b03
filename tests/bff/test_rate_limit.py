"""Per-caller rate limit: calls over the limit get 429 with Retry-After and never go upstream."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx
import pytest
import respx
from starlette.requests import Request

from bff import Principal
from bff.auth import static_authenticator
from tests.support.clock import START, FakeClock
from tests.support.gateway import ALICE, BOB, FLOWS, UP_FLOWS, in_process, make_settings
from tests.support.keys import redis_sessions
from tests.support.redis import RedisServer

EMPTY = {"delivery_flows": [], "next_cursor": None}
LIMITED = make_settings(bff={"rate_limit_per_minute": 3})


async def test_calls_over_the_limit_are_refused_until_the_next_minute(
    upstream: respx.MockRouter,
) -> None:
    listing = upstream.get(UP_FLOWS).respond(json=EMPTY)
    clock = FakeClock(START + 10)  # 10 s into a minute
    transport = httpx.MockTransport(upstream.async_handler)
    async with in_process(
        transport, authenticators=[static_authenticator(ALICE)], settings=LIMITED, clock=clock
    ) as alice:
        statuses = [(await alice.client.get(FLOWS)).status_code for _ in range(3)]
        refused = await alice.client.get(FLOWS)
        clock.advance(50)  # the next minute
        again = await alice.client.get(FLOWS)
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "https://api.zen-mesh.io/errors/rate-limited"
    assert refused.headers["retry-after"] == "50"
    assert again.status_code == 200
    assert listing.call_count == 4, "the refused call never went upstream"


async def test_each_caller_has_a_limit_of_its_own(upstream: respx.MockRouter) -> None:
    upstream.get(UP_FLOWS).respond(json=EMPTY)
    users = {"alice": ALICE, "bob": BOB}

    async def by_header(request: Request) -> Principal | None:
        return users[request.headers["x-user"]]

    transport = httpx.MockTransport(upstream.async_handler)
    async with in_process(transport, authenticators=[by_header], settings=LIMITED) as bff:
        for _ in range(3):
            await bff.client.get(FLOWS, headers={"x-user": "alice"})
        assert (await bff.client.get(FLOWS, headers={"x-user": "alice"})).status_code == 429
        assert (await bff.client.get(FLOWS, headers={"x-user": "bob"})).status_code == 200


@pytest.mark.redis
async def test_instances_sharing_redis_share_the_count(
    redis_server: RedisServer, upstream: respx.MockRouter
) -> None:
    upstream.get(UP_FLOWS).respond(json=EMPTY)
    settings = make_settings(
        bff={"rate_limit_per_minute": 3},
        sessions=redis_sessions(redis_server.url),
    )
    clock = FakeClock(START + 10 + 7 * 60)  # a minute of its own, in case the server is shared
    transport = httpx.MockTransport(upstream.async_handler)
    async with AsyncExitStack() as stack:
        first, second = [
            await stack.enter_async_context(
                in_process(
                    transport,
                    authenticators=[static_authenticator(ALICE)],
                    settings=settings,
                    clock=clock,
                )
            )
            for _ in range(2)
        ]
        statuses = [
            (await running.client.get(FLOWS)).status_code
            for running in (first, second, first, second)
        ]
    assert statuses == [200, 200, 200, 429]
