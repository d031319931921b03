"""Several BFF instances sharing one Redis: a write through one is seen at once by the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
import respx

from bff.auth import static_authenticator
from bff.settings import Settings
from bff.state.invalidation import RedisInvalidation
from tests.support.clock import FakeClock
from tests.support.gateway import (
    ALICE,
    BACKCHANNEL,
    FLOWS,
    UP_FLOWS,
    Running,
    in_process,
    make_settings,
    upstream_flow,
)
from tests.support.keys import redis_sessions
from tests.support.provider import FakeProvider
from tests.support.redis import RedisServer
from tests.support.signin import auth_settings, running_instances

pytestmark = pytest.mark.redis

BODY = {"name": "n", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"}


async def _subscribed(running: Running) -> None:
    invalidation = running.app.state.services.invalidation
    assert isinstance(invalidation, RedisInvalidation)
    await asyncio.wait_for(invalidation.subscribed.wait(), timeout=5)


@pytest.fixture
async def two_instances(
    redis_server: RedisServer, upstream: respx.MockRouter
) -> AsyncIterator[tuple[Running, Running]]:
    settings = make_settings(
        cache={"ttl_seconds": 300},
        sessions=redis_sessions(redis_server.url),
    )
    transport = httpx.MockTransport(upstream.async_handler)
    async with AsyncExitStack() as stack:
        first, second = [
            await stack.enter_async_context(
                in_process(
                    transport, authenticators=[static_authenticator(ALICE)], settings=settings
                )
            )
            for _ in range(2)
        ]
        await asyncio.gather(_subscribed(first), _subscribed(second))
        yield first, second


async def test_a_write_through_one_instance_clears_the_others_cache(
    two_instances: tuple[Running, Running], upstream: respx.MockRouter
) -> None:
    first, second = two_instances
    listing = upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow(), headers={"ETag": '"1"'})

    assert (await second.client.get(FLOWS)).status_code == 200
    assert (await second.client.get(FLOWS)).status_code == 200
    assert listing.call_count == 1, "the second read is served from the micro-cache"

    created = await first.client.post(FLOWS, json=BODY)
    assert created.status_code == 201

    listing.respond(json={"delivery_flows": [upstream_flow()], "next_cursor": None})
    for _ in range(300):  # the message crosses Redis; give it up to three seconds
        if [flow["id"] for flow in (await second.client.get(FLOWS)).json()["items"]]:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the other instance kept serving the list from before the write")


async def test_other_clusters_stay_cached(
    two_instances: tuple[Running, Running], upstream: respx.MockRouter
) -> None:
    first, second = two_instances
    eu_flows = FLOWS.replace("plane_dev_us_east_1", "plane_dev_eu_west_1")
    listing = upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow(), headers={"ETag": '"1"'})
    await second.client.get(eu_flows)
    await first.client.post(FLOWS, json=BODY)
    await asyncio.sleep(0.2)
    await second.client.get(eu_flows)
    assert listing.call_count == 1


def _shared(redis_server: RedisServer) -> Settings:
    """Test settings with the fake provider, sessions in ``redis_server``."""
    return auth_settings(sessions=redis_sessions(redis_server.url))


async def test_two_instances_refresh_one_shared_session_once(
    redis_server: RedisServer, upstream: respx.MockRouter
) -> None:
    """Rotating refresh tokens: a second refresh from another instance would spend a used token."""
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    provider = FakeProvider(FakeClock())
    provider.expires_in = 300
    async with running_instances(
        auth_settings(sessions=redis_sessions(redis_server.url)), upstream, provider
    ) as harnesses:
        raw_id = await harnesses[0].login(harnesses[0].browser(), "alice")
        provider.clock.advance(400)  # the access token has expired
        provider.refresh_gate = asyncio.Event()

        calls = [
            asyncio.create_task(h.browser_with(raw_id).api("GET", FLOWS))
            for h in harnesses
            for _ in range(5)
        ]
        await asyncio.sleep(0.3)  # both instances reach the refresh, one holds the lock
        assert provider.refresh_calls == 1
        provider.refresh_gate.set()
        responses = await asyncio.gather(*calls)

    assert [r.status_code for r in responses] == [200] * 10
    assert provider.refresh_calls == 1


async def test_while_the_provider_is_down_a_still_valid_token_serves_every_instance(
    redis_server: RedisServer, upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instance waiting on another's refresh fares as the one that tried: 200, not 503."""
    monkeypatch.setattr("bff.auth.authenticators.REFRESH_WAIT_SECONDS", 1.0)
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    provider = FakeProvider(FakeClock())
    provider.expires_in = 300
    async with running_instances(
        auth_settings(sessions=redis_sessions(redis_server.url)), upstream, provider
    ) as harnesses:
        raw_id = await harnesses[0].login(harnesses[0].browser(), "alice")
        provider.clock.advance(300 - 30)  # inside the refresh margin, still valid
        provider.refresh_mode = "down"
        provider.refresh_gate = asyncio.Event()

        holder = asyncio.create_task(harnesses[0].browser_with(raw_id).api("GET", FLOWS))
        await asyncio.sleep(0.2)  # the first instance holds the lock, waiting on the provider
        assert provider.refresh_calls == 1
        waiter = asyncio.create_task(harnesses[1].browser_with(raw_id).api("GET", FLOWS))
        await asyncio.sleep(0.2)
        provider.refresh_gate.set()
        responses = await asyncio.gather(holder, waiter)

    assert [r.status_code for r in responses] == [200, 200], responses[1].text


async def test_a_logout_token_replayed_to_another_instance_is_refused(
    redis_server: RedisServer, upstream: respx.MockRouter
) -> None:
    provider = FakeProvider(FakeClock())
    async with running_instances(
        auth_settings(sessions=redis_sessions(redis_server.url)), upstream, provider
    ) as (first, second):
        raw_id = await first.insert_session("alice", sid="sid-1")
        token = provider.logout_token(sid="sid-1")
        accepted = await first.client.post(BACKCHANNEL, data={"logout_token": token})
        replayed = await second.client.post(BACKCHANNEL, data={"logout_token": token})
        assert await second.app.state.signin.sessions.store.get(raw_id) is None
    assert accepted.status_code == 200
    assert replayed.status_code == 400
    assert "replayed" in replayed.json()["error_description"]
