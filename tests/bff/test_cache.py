"""The micro-cache of GET responses, the cached look-ups behind it, and SingleFlightCache itself."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import respx
from starlette.requests import Request

from bff import Principal
from bff.cache import SingleFlightCache
from bff.catalog import NAMES_RETRY_AFTER, Catalog
from bff.settings import Settings
from bff.views import Names
from tests.support.clock import FakeClock
from tests.support.gateway import (
    ALICE,
    API,
    BOB,
    CAROL,
    CLUSTERS,
    FLOWS,
    INGESTERS,
    RW,
    UP_FLOWS,
    UPSTREAM,
    Running,
    in_process,
    make_settings,
    upstream_flow,
)
from upstream_client import BackendClient

# A TTL far longer than any test: entries must leave the cache by invalidation, not by age.
CACHED = make_settings(cache={"ttl_seconds": 300}, upstream={"max_attempts": 1})
EU_FLOWS = f"{API}/tenants/ten_acme/clusters/plane_dev_eu_west_1/delivery-flows"
BODY = {"name": "stripe-to-app", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"}
WRITE_ONLY = Principal(
    subject="walt",
    tenants={"ten_acme": frozenset({"write:delivery-flows"})},
    via="static",
    access_token="zen_key_walt",
)
TWO_TENANTS = Principal(
    subject="dana",
    tenants={"ten_acme": RW, "ten_globex": RW},
    via="static",
    access_token="zen_key_dana",
)
USERS = {p.subject: p for p in (ALICE, BOB, CAROL, WRITE_ONLY, TWO_TENANTS)}


async def by_header(request: Request) -> Principal | None:
    """The caller named by ``X-Test-User``, so that one app (one cache) serves several users."""
    return USERS.get(request.headers.get("x-test-user", "alice"))


def running(
    router: respx.MockRouter, settings: Settings = CACHED
) -> AbstractAsyncContextManager[Running]:
    return in_process(
        httpx.MockTransport(router.async_handler), authenticators=[by_header], settings=settings
    )


def flows_page(*flow_ids: str, cluster_id: str = "plane_dev_us_east_1") -> dict[str, Any]:
    return {
        "delivery_flows": [upstream_flow(fid, cluster_id=cluster_id) for fid in flow_ids],
        "next_cursor": None,
    }


# --- the micro-cache ----------------------------------------------------------------------------


async def test_identical_list_and_get_are_served_from_cache(upstream: respx.MockRouter) -> None:
    flows = upstream.get(UP_FLOWS).respond(json=flows_page("flow_1"))
    flow = upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow(), headers={"ETag": '"1"'})
    async with running(upstream) as bff:
        lists = [await bff.client.get(FLOWS, params={"limit": "5"}) for _ in range(3)]
        gets = [await bff.client.get(f"{FLOWS}/flow_1") for _ in range(3)]
    assert [r.status_code for r in lists + gets] == [200] * 6
    assert lists[0].json() == lists[2].json()
    assert gets[0].json() == gets[2].json()
    assert gets[2].headers["etag"] == '"1"'
    assert flows.call_count == 1
    assert flow.call_count == 1
    # Each response still carries its own request id.
    assert len({r.headers["x-request-id"] for r in lists}) == 3


async def test_a_different_query_is_a_miss(upstream: respx.MockRouter) -> None:
    flows = upstream.get(UP_FLOWS).respond(json=flows_page("flow_1"))
    async with running(upstream) as bff:
        await bff.client.get(FLOWS, params={"limit": "5"})
        await bff.client.get(FLOWS, params={"limit": "6"})
        await bff.client.get(FLOWS, params={"limit": "5", "cursor": "abc"})
        await bff.client.get(FLOWS, params={"limit": "5"})
    assert [call.request.url.params.get("cursor") for call in flows.calls] == [None, None, "abc"]


@pytest.mark.parametrize("write", ["create", "update", "delete"])
async def test_a_write_invalidates_its_tenant_and_cluster_only(
    upstream: respx.MockRouter, write: str
) -> None:
    us = upstream.get(UP_FLOWS, params={"cluster_id": "plane_dev_us_east_1"}).respond(
        json=flows_page("flow_1")
    )
    eu = upstream.get(UP_FLOWS, params={"cluster_id": "plane_dev_eu_west_1"}).respond(
        json=flows_page("flow_eu", cluster_id="plane_dev_eu_west_1")
    )
    got = upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow(), headers={"ETag": '"1"'})
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow("flow_2"), headers={"ETag": '"1"'})
    upstream.put(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow(), headers={"ETag": '"2"'})
    upstream.delete(f"{UP_FLOWS}/flow_1").respond(204)
    async with running(upstream) as bff:
        await bff.client.get(FLOWS)
        await bff.client.get(EU_FLOWS)
        await bff.client.get(f"{FLOWS}/flow_1")
        gets_before_write = got.call_count
        if write == "create":
            response = await bff.client.post(FLOWS, json=BODY)
        elif write == "update":
            response = await bff.client.put(f"{FLOWS}/flow_1", json=BODY)
        else:
            response = await bff.client.delete(f"{FLOWS}/flow_1")
        assert response.status_code < 300, response.text
        gets_by_write = got.call_count - gets_before_write
        await bff.client.get(FLOWS)
        await bff.client.get(EU_FLOWS)
        await bff.client.get(f"{FLOWS}/flow_1")
    assert us.call_count == 2
    assert eu.call_count == 1
    assert got.call_count == gets_before_write + gets_by_write + 1


async def test_a_failed_write_still_invalidates(upstream: respx.MockRouter) -> None:
    # A write that timed out may have landed upstream: the cached list could be stale.
    flows = upstream.get(UP_FLOWS).respond(json=flows_page("flow_1"))
    upstream.post(UP_FLOWS).mock(side_effect=httpx.ReadTimeout)
    async with running(upstream) as bff:
        await bff.client.get(FLOWS)
        failed = await bff.client.post(FLOWS, json=BODY)
        await bff.client.get(FLOWS)
    assert failed.status_code == 504
    assert flows.call_count == 2


async def test_identical_concurrent_misses_share_one_upstream_call(
    upstream: respx.MockRouter,
) -> None:
    release = asyncio.Event()
    started = 0

    async def slow_page(request: httpx.Request) -> httpx.Response:
        nonlocal started
        started += 1
        await release.wait()
        return httpx.Response(200, json=flows_page("flow_1"))

    upstream.get(UP_FLOWS).mock(side_effect=slow_page)
    async with running(upstream) as bff:
        cache = bff.app.state.services.responses.pages
        waiting = 0
        original_get = cache.get

        async def counting_get(key: Any, load: Any) -> Any:
            nonlocal waiting
            waiting += 1
            return await original_get(key, load)

        cache.get = counting_get
        requests = [asyncio.ensure_future(bff.client.get(FLOWS)) for _ in range(20)]
        for _ in range(1000):
            if waiting == 20:
                break
            await asyncio.sleep(0)
        assert waiting == 20
        release.set()
        responses = await asyncio.gather(*requests)
    assert [r.status_code for r in responses] == [200] * 20
    assert started == 1
    assert len({r.headers["x-request-id"] for r in responses}) == 20


async def test_cache_is_served_only_after_authorization(upstream: respx.MockRouter) -> None:
    flows = upstream.get(UP_FLOWS).respond(json=flows_page("flow_1"))
    flow = upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow())
    async with running(upstream) as bff:
        assert (await bff.client.get(FLOWS)).status_code == 200
        assert (await bff.client.get(f"{FLOWS}/flow_1")).status_code == 200
        other_tenant = await bff.client.get(FLOWS, headers={"X-Test-User": "carol"})
        no_read = await bff.client.get(f"{FLOWS}/flow_1", headers={"X-Test-User": "walt"})
        nobody = await bff.client.get(FLOWS, headers={"X-Test-User": "mallory"})
        reader = await bff.client.get(FLOWS, headers={"X-Test-User": "bob"})
    assert other_tenant.status_code == 403
    assert other_tenant.json()["type"].endswith("/tenant-forbidden")
    assert no_read.status_code == 403
    assert no_read.json()["required_scope"] == "read:delivery-flows"
    assert nobody.status_code == 401
    assert "stripe-to-app" not in other_tenant.text + no_read.text + nobody.text
    # A reader with access gets the cached page, with their own permissions.
    assert reader.status_code == 200
    assert reader.json()["items"][0]["permissions"] == {"update": False, "delete": False}
    assert flows.call_count == 1 and flow.call_count == 1


async def test_a_rendered_page_is_reused_only_for_the_same_permissions(
    upstream: respx.MockRouter,
) -> None:
    flows = upstream.get(UP_FLOWS).respond(json=flows_page("flow_1", "flow_2"))
    async with running(upstream) as bff:
        writer = [await bff.client.get(FLOWS) for _ in range(2)]
        reader = [await bff.client.get(FLOWS, headers={"X-Test-User": "bob"}) for _ in range(2)]
        writer.append(await bff.client.get(FLOWS))
    assert flows.call_count == 1
    assert writer[0].content == writer[1].content == writer[2].content
    assert reader[0].content == reader[1].content != writer[0].content
    write, read = {"update": True, "delete": True}, {"update": False, "delete": False}
    assert [item["permissions"] for item in writer[2].json()["items"]] == [write, write]
    assert [item["permissions"] for item in reader[1].json()["items"]] == [read, read]


async def test_a_rendered_page_is_not_shown_after_a_write_or_new_names(
    upstream: respx.MockRouter,
) -> None:
    upstream.get(UP_FLOWS).mock(
        side_effect=[
            httpx.Response(200, json=flows_page("flow_1")),
            httpx.Response(200, json=flows_page("flow_1", "flow_2")),
        ]
    )
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow("flow_2"), headers={"ETag": '"1"'})
    async with running(upstream) as bff:
        before = (await bff.client.get(FLOWS)).json()
        assert (await bff.client.post(FLOWS, json=BODY)).status_code == 201
        after = (await bff.client.get(FLOWS)).json()
        renamed = [{**INGESTERS["ingesters"][0], "name": "Stripe (renamed)"}]
        upstream.routes["ingesters"].respond(json={"ingesters": renamed, "next_cursor": None})
        # The names' TTL running out: they are looked up again, the page itself still cached.
        bff.app.state.services.catalog._endpoints.invalidate(lambda key: True)
        renamed_page = (await bff.client.get(FLOWS)).json()
    assert [item["id"] for item in before["items"]] == ["flow_1"]
    assert [item["id"] for item in after["items"]] == ["flow_1", "flow_2"]
    assert after["items"][0]["source"]["name"] == "Stripe production"
    assert renamed_page["items"][0]["source"]["name"] == "Stripe (renamed)"


async def test_a_cached_answer_mints_no_upstream_token(upstream: respx.MockRouter) -> None:
    flows = upstream.get(UP_FLOWS).respond(json=flows_page("flow_1"))
    minted = make_settings(cache={"ttl_seconds": 300}, upstream={"credential": "internal-jwt"})
    async with running(upstream, minted) as bff:
        services = bff.app.state.services
        minter = services.credentials._minter
        calls: list[str] = []
        mint = minter.mint
        minter.mint = lambda *args: calls.append(args[0]) or mint(*args)
        await bff.client.get(FLOWS)
        after_miss = len(calls)
        for _ in range(3):
            assert (await bff.client.get(FLOWS)).status_code == 200
    assert flows.call_count == 1
    assert after_miss >= 1, "the miss needed a token"
    assert len(calls) == after_miss, "the hits did not"


async def test_ttl_zero_disables_the_cache(upstream: respx.MockRouter) -> None:
    flows = upstream.get(UP_FLOWS).respond(json=flows_page("flow_1"))
    flow = upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow())
    async with running(upstream, make_settings(cache={"ttl_seconds": 0})) as bff:
        for _ in range(3):
            await bff.client.get(FLOWS)
            await bff.client.get(f"{FLOWS}/flow_1")
    assert flows.call_count == 3
    assert flow.call_count == 3


# --- enrichment and look-ups --------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["ingesters", "destinations"])
async def test_flows_come_back_without_names_when_the_lookup_fails(
    upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture, failing: str
) -> None:
    upstream.routes[failing].mock(return_value=httpx.Response(500, json={"detail": "down"}))
    upstream.get(UP_FLOWS).respond(json=flows_page("flow_1"))
    upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow())
    with caplog.at_level(logging.WARNING, logger="bff.catalog"):
        async with running(upstream) as bff:
            listed = await bff.client.get(FLOWS)
            got = await bff.client.get(f"{FLOWS}/flow_1")
    assert listed.status_code == 200 and got.status_code == 200
    for view in (listed.json()["items"][0], got.json()):
        assert view["source"] == {"id": "ing_stripe_prod", "name": None}
        assert view["destination"] == {"id": "dest_orders_api", "name": None}
        assert view["name"] == "stripe-to-app"
    warnings = [r for r in caplog.records if r.name == "bff.catalog"]
    assert warnings and all(r.levelno == logging.WARNING for r in warnings)
    assert "ten_acme/plane_dev_us_east_1" in warnings[0].getMessage()


async def test_a_failed_lookup_is_tried_again_after_a_short_hold_off(
    upstream: respx.MockRouter,
) -> None:
    upstream.routes["ingesters"].mock(
        side_effect=[
            httpx.Response(500),
            httpx.Response(200, json={"ingesters": [], "next_cursor": None}),
        ]
    )
    now = [0.0]
    async with BackendClient(
        UPSTREAM, transport=httpx.MockTransport(upstream.async_handler)
    ) as client:
        catalog = Catalog(client, ttl=30, maxsize=10, timer=lambda: now[0])

        async def names() -> Names:
            return await catalog.names(
                "ten_acme",
                "plane_dev_us_east_1",
                token=lambda: "zen_key_dev_acme_rw",
                request_id="req_1",
            )

        assert (await names()).sources is None
        assert (await names()).sources is None
        assert upstream.routes["ingesters"].call_count == 1
        now[0] += NAMES_RETRY_AFTER + 1
        assert (await names()).sources == {}
    assert upstream.routes["ingesters"].call_count == 2


async def test_lookups_are_cached_per_tenant_and_cluster(upstream: respx.MockRouter) -> None:
    upstream.get(UP_FLOWS).respond(json=flows_page())
    settings = make_settings(cache={"ttl_seconds": 0})
    async with running(upstream, settings) as bff:
        for _ in range(3):
            await bff.client.get(FLOWS)
            await bff.client.get(
                f"{API}/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flow-options"
            )
        await bff.client.get(EU_FLOWS)
        await bff.client.get(EU_FLOWS)
    ingesters, destinations = upstream.routes["ingesters"], upstream.routes["destinations"]
    assert [c.request.url.params["cluster_id"] for c in ingesters.calls] == [
        "plane_dev_us_east_1",
        "plane_dev_eu_west_1",
    ]
    assert destinations.call_count == 2


async def test_clusters_are_cached_per_tenant(upstream: respx.MockRouter) -> None:
    globex = upstream.get("/v1/tenants/ten_globex/clusters").respond(
        json={
            "clusters": [
                {
                    "id": "plane_globex_main",
                    "name": "Main",
                    "region": "us-west-2",
                    "status": "active",
                }
            ],
            "next_cursor": None,
        }
    )
    upstream.get(UP_FLOWS).respond(json=flows_page())
    dana = {"X-Test-User": "dana"}
    async with running(upstream, make_settings(cache={"ttl_seconds": 0})) as bff:
        acme_lists = [
            await bff.client.get(f"{API}/tenants/ten_acme/clusters", headers=dana) for _ in range(2)
        ]
        await bff.client.get(FLOWS, headers=dana)
        globex_list = await bff.client.get(f"{API}/tenants/ten_globex/clusters", headers=dana)
        await bff.client.get(f"{API}/tenants/ten_globex/clusters", headers=dana)
    assert [c["id"] for c in acme_lists[1].json()["items"]] == [
        c["id"] for c in CLUSTERS["clusters"]
    ]
    assert [c["id"] for c in globex_list.json()["items"]] == ["plane_globex_main"]
    assert upstream.routes["clusters"].call_count == 1
    assert globex.call_count == 1


# --- SingleFlightCache --------------------------------------------------------------------------


class Loader:
    """A load function that counts its calls and finishes when the test says so."""

    def __init__(self, *results: object) -> None:
        self.calls = 0
        self.results = list(results)
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self) -> object:
        self.calls += 1
        result = self.results[min(self.calls, len(self.results)) - 1]
        await self.release.wait()
        if isinstance(result, BaseException):
            raise result
        return result


async def test_single_flight_cache_respects_ttl() -> None:
    timer = FakeClock()
    cache: SingleFlightCache[str, object] = SingleFlightCache(ttl=2, maxsize=10, timer=timer)
    load = Loader("v1", "v2")
    assert await cache.get("k", load) == "v1"
    timer.advance(1.9)
    assert await cache.get("k", load) == "v1"
    timer.advance(0.2)
    assert await cache.get("k", load) == "v2"
    assert load.calls == 2


async def test_single_flight_cache_keys_are_independent() -> None:
    cache: SingleFlightCache[str, object] = SingleFlightCache(ttl=2, maxsize=10, timer=FakeClock())
    a, b = Loader("a"), Loader("b")
    assert [await cache.get("a", a), await cache.get("b", b), await cache.get("a", a)] == [
        "a",
        "b",
        "a",
    ]
    assert (a.calls, b.calls) == (1, 1)


async def test_a_full_cache_drops_expired_entries_first_then_the_oldest() -> None:
    timer = FakeClock()
    cache: SingleFlightCache[str, object] = SingleFlightCache(ttl=2, maxsize=2, timer=timer)
    loads = {key: Loader(key + "1", key + "2") for key in "abc"}
    await cache.get("a", loads["a"])
    timer.advance(1.5)
    await cache.get("b", loads["b"])
    timer.advance(1.0)  # "a" has expired, "b" has not
    await cache.get("c", loads["c"])  # full: the expired "a" makes room, "b" stays
    assert cache.peek("a") is None and cache.peek("b") == "b1" and cache.peek("c") == "c1"
    await cache.get("a", loads["a"])  # full, nothing expired: "b", the oldest, makes room
    assert cache.peek("b") is None and cache.peek("c") == "c1" and cache.peek("a") == "a2"
    assert [loads[key].calls for key in "abc"] == [2, 1, 1]


async def test_peek_answers_only_a_fresh_value_and_never_loads() -> None:
    timer = FakeClock()
    reported: list[str] = []
    cache: SingleFlightCache[str, object] = SingleFlightCache(
        ttl=2, maxsize=10, timer=timer, report=reported.append
    )
    assert cache.peek("k") is None and reported == []
    await cache.get("k", Loader("v"))
    assert cache.peek("k") == "v"
    timer.advance(2)
    assert cache.peek("k") is None
    assert reported == ["miss", "hit"]
    off: SingleFlightCache[str, object] = SingleFlightCache(ttl=0, maxsize=10)
    assert off.peek("k") is None and not off.enabled


async def test_ttl_zero_loads_every_time() -> None:
    cache: SingleFlightCache[str, object] = SingleFlightCache(ttl=0, maxsize=10)
    load = Loader("v1", "v2")
    assert [await cache.get("k", load), await cache.get("k", load)] == ["v1", "v2"]


async def test_concurrent_misses_share_one_load() -> None:
    cache: SingleFlightCache[str, object] = SingleFlightCache(ttl=2, maxsize=10, timer=FakeClock())
    load = Loader("v1")
    load.release.clear()
    waiters = [asyncio.ensure_future(cache.get("k", load)) for _ in range(10)]
    await asyncio.sleep(0)
    load.release.set()
    assert await asyncio.gather(*waiters) == ["v1"] * 10
    assert load.calls == 1


async def test_invalidation_during_a_load_is_not_stored() -> None:
    cache: SingleFlightCache[str, object] = SingleFlightCache(ttl=60, maxsize=10, timer=FakeClock())
    stale = Loader("before-write")
    stale.release.clear()
    first = asyncio.ensure_future(cache.get("k", stale))
    await asyncio.sleep(0)
    cache.invalidate(lambda key: key == "k")
    # A caller after the write does not join the load that started before it.
    fresh = Loader("after-write")
    assert await cache.get("k", fresh) == "after-write"
    stale.release.set()
    assert await first == "before-write"
    # The stale result was not stored over the fresh one.
    assert await cache.get("k", Loader("unused")) == "after-write"


async def test_invalidation_matches_by_predicate() -> None:
    cache: SingleFlightCache[tuple[str, str], object] = SingleFlightCache(
        ttl=60, maxsize=10, timer=FakeClock()
    )
    await cache.get(("ten_acme", "us"), Loader("us-1"))
    await cache.get(("ten_acme", "eu"), Loader("eu-1"))
    cache.invalidate(lambda key: key == ("ten_acme", "us"))
    assert await cache.get(("ten_acme", "us"), Loader("us-2")) == "us-2"
    assert await cache.get(("ten_acme", "eu"), Loader("eu-2")) == "eu-1"


async def test_a_cancelled_waiter_does_not_cancel_the_shared_load() -> None:
    cache: SingleFlightCache[str, object] = SingleFlightCache(ttl=60, maxsize=10, timer=FakeClock())
    load = Loader("v1")
    load.release.clear()
    leaving = asyncio.ensure_future(cache.get("k", load))
    staying = asyncio.ensure_future(cache.get("k", load))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    assert leaving.cancelled()
    load.release.set()
    assert await staying == "v1"
    assert load.calls == 1
    # The load completed and was stored although its first caller left.
    assert await cache.get("k", Loader("unused")) == "v1"


async def test_a_load_whose_only_waiter_left_still_completes() -> None:
    cache: SingleFlightCache[str, object] = SingleFlightCache(ttl=60, maxsize=10, timer=FakeClock())
    load = Loader("v1")
    load.release.clear()
    leaving = asyncio.ensure_future(cache.get("k", load))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    load.release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert await cache.get("k", Loader("unused")) == "v1"
    assert load.calls == 1


async def test_an_exception_reaches_every_waiter_and_is_not_cached() -> None:
    cache: SingleFlightCache[str, object] = SingleFlightCache(ttl=60, maxsize=10, timer=FakeClock())
    failing = Loader(LookupError("upstream down"))
    failing.release.clear()
    waiters = [asyncio.ensure_future(cache.get("k", failing)) for _ in range(5)]
    await asyncio.sleep(0)
    failing.release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, LookupError) and str(r) == "upstream down" for r in results)
    assert failing.calls == 1
    assert await cache.get("k", Loader("recovered")) == "recovered"


async def test_failing_name_lookups_neither_fail_flows_nor_trip_the_breaker(
    upstream: respx.MockRouter,
) -> None:
    """An unavailable lookup is tried once, then left alone for a while; flows keep coming."""
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [upstream_flow()], "next_cursor": None})
    ingesters = upstream.get("/v1/tenants/ten_acme/ingesters", name="ingesters").respond(503)
    destinations = upstream.get("/v1/tenants/ten_acme/destinations", name="destinations").respond(
        503
    )
    settings = make_settings(cache={"ttl_seconds": 0}, upstream={"max_attempts": 3})
    async with running(upstream, settings) as bff:
        responses = [await bff.client.get(FLOWS) for _ in range(10)]
    assert [r.status_code for r in responses] == [200] * 10
    assert {r.json()["items"][0]["source"]["name"] for r in responses} == {None}
    assert (ingesters.call_count, destinations.call_count) == (1, 1)


async def test_a_slow_name_lookup_does_not_hold_the_flows_back(
    upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bff.catalog.NAMES_WAIT", 0.05)
    release = asyncio.Event()

    async def slow_ingesters(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json={"ingesters": [], "next_cursor": None})

    upstream.routes["ingesters"].mock(side_effect=slow_ingesters)
    upstream.get(UP_FLOWS).respond(json=flows_page("flow_1"))
    async with running(upstream, make_settings(cache={"ttl_seconds": 0})) as bff:
        first = await asyncio.wait_for(bff.client.get(FLOWS), timeout=5)
        assert first.status_code == 200
        assert first.json()["items"][0]["source"]["name"] is None
        release.set()  # the lookup goes on in the background and fills the cache
        for _ in range(100):
            second = await bff.client.get(FLOWS)
            if second.json()["items"][0]["destination"]["name"] is not None:
                break
            await asyncio.sleep(0.01)
    assert second.json()["items"][0]["destination"]["name"] == "Orders API"
    assert upstream.routes["ingesters"].call_count == 1
