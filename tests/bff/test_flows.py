"""The five flow operations, clusters and form options: success paths and the errors that apply."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import respx

from tests.support.gateway import (
    BOB,
    CAROL,
    FLOWS,
    UP_FLOWS,
    BffFactory,
    make_settings,
    upstream_flow,
)


async def test_list_reshapes_flows_into_views(bff: BffFactory, upstream: respx.MockRouter) -> None:
    route = upstream.get(UP_FLOWS).respond(
        json={"delivery_flows": [upstream_flow()], "next_cursor": "abc"}
    )
    async with bff() as client:
        response = await client.get(FLOWS, params={"limit": "5"})
    assert response.status_code == 200
    assert response.json() == {
        "items": [
            {
                "id": "flow_1",
                "name": "stripe-to-app",
                "clusterId": "plane_dev_us_east_1",
                "source": {"id": "ing_stripe_prod", "name": "Stripe production"},
                "destination": {"id": "dest_orders_api", "name": "Orders API"},
                "retryPolicy": {"maxAttempts": 3, "backoffSeconds": 10},
                "createdAt": "2026-11-01T10:00:00Z",
                "updatedAt": "2026-11-01T10:00:00Z",
                "permissions": {"update": True, "delete": True},
            }
        ],
        "page": {"limit": 5, "nextCursor": "abc", "hasMore": True},
    }
    sent = route.calls.last.request
    assert sent.url.params["cluster_id"] == "plane_dev_us_east_1"
    assert sent.url.params["limit"] == "5"
    assert sent.headers["authorization"] == "Bearer zen_key_dev_acme_rw"
    assert sent.headers["x-request-id"] == response.headers["x-request-id"]
    assert response.headers["cache-control"] == "no-store"


async def test_read_only_user_sees_no_write_permissions(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [upstream_flow()], "next_cursor": None})
    async with bff(principal=BOB) as client:
        body = (await client.get(FLOWS)).json()
    assert body["items"][0]["permissions"] == {"update": False, "delete": False}
    assert body["page"] == {"limit": 20, "nextCursor": None, "hasMore": False}


async def test_create_maps_ui_body_and_returns_201(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    route = upstream.post(UP_FLOWS).respond(
        201, json=upstream_flow("flow_new"), headers={"ETag": '"1"'}
    )
    async with bff() as client:
        response = await client.post(
            FLOWS,
            json={
                "name": "stripe-to-app",
                "sourceId": "ing_stripe_prod",
                "destinationId": "dest_orders_api",
                "retryPolicy": {"maxAttempts": 5},
            },
            headers={"Idempotency-Key": "ui-key-1"},
        )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"{FLOWS}/flow_new"
    assert response.headers["etag"] == '"1"'
    assert response.json()["source"] == {"id": "ing_stripe_prod", "name": "Stripe production"}
    sent = route.calls.last.request
    assert json.loads(sent.content) == {
        "name": "stripe-to-app",
        "cluster_id": "plane_dev_us_east_1",
        "source_id": "ing_stripe_prod",
        "destination_id": "dest_orders_api",
        "config": {"retry_policy": {"max_attempts": 5, "backoff_seconds": 10}},
    }
    assert sent.headers["idempotency-key"] == "ui-key-1"


async def test_create_without_key_still_sends_one(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    route = upstream.post(UP_FLOWS).respond(201, json=upstream_flow(), headers={"ETag": '"1"'})
    async with bff() as client:
        await client.post(FLOWS, json={"name": "n", "sourceId": "ing_a", "destinationId": "dest_b"})
    assert route.calls.last.request.headers["idempotency-key"]


async def test_get_returns_etag_and_304_on_match(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    upstream.get(f"{UP_FLOWS}/flow_1").respond(
        json=upstream_flow(version=4), headers={"ETag": '"4"'}
    )
    async with bff() as client:
        first = await client.get(f"{FLOWS}/flow_1")
        again = await client.get(f"{FLOWS}/flow_1", headers={"If-None-Match": '"4"'})
        stale = await client.get(f"{FLOWS}/flow_1", headers={"If-None-Match": '"3"'})
    assert first.status_code == 200
    assert first.headers["etag"] == '"4"'
    assert first.headers["cache-control"] == "private, no-cache"
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == '"4"'
    assert stale.status_code == 200


TWO_FLOWS = {"delivery_flows": [upstream_flow(), upstream_flow("flow_2")], "next_cursor": None}
EMPTY = {"delivery_flows": [], "next_cursor": None}


def _cache_outcome(response: httpx.Response) -> str:
    return response.headers["server-timing"].rpartition("cache;desc=")[2]


@pytest.mark.parametrize("ttl", [30, 0], ids=["micro-cache", "no-micro-cache"])
async def test_a_list_has_an_etag_and_if_none_match_gets_304_on_hits_and_misses(
    bff: BffFactory, upstream: respx.MockRouter, ttl: int
) -> None:
    route = upstream.get(UP_FLOWS).respond(json=TWO_FLOWS)
    settings = make_settings(cache={"ttl_seconds": ttl})
    async with bff(settings=settings) as client:
        first = await client.get(FLOWS)
        tag = first.headers["etag"]
        again = await client.get(FLOWS, headers={"If-None-Match": tag})
    # Another instance, whose micro-cache has not seen the page: the same tag.
    async with bff(settings=settings) as other:
        elsewhere = await other.get(FLOWS, headers={"If-None-Match": tag})
    assert first.status_code == 200 and len(first.json()["items"]) == 2
    assert re.fullmatch(r'"[0-9a-f]{32}"', tag), tag
    for unchanged in (again, elsewhere):
        assert unchanged.status_code == 304
        assert unchanged.content == b""
        assert "content-type" not in unchanged.headers
        assert unchanged.headers["etag"] == tag
        assert unchanged.headers["cache-control"] == first.headers["cache-control"] == "no-store"
    assert [_cache_outcome(again), _cache_outcome(elsewhere)] == (
        ["hit", "miss"] if ttl else ["bypass", "bypass"]
    )
    assert route.call_count == (2 if ttl else 3)


@pytest.mark.parametrize("page", [TWO_FLOWS, EMPTY], ids=["flows", "empty"])
async def test_callers_who_may_do_different_things_never_share_a_list_tag(
    bff: BffFactory, upstream: respx.MockRouter, page: dict[str, object]
) -> None:
    upstream.get(UP_FLOWS).respond(json=page)
    settings = make_settings(cache={"ttl_seconds": 30})
    async with bff(settings=settings) as alice:
        writer = await alice.get(FLOWS)
        writer_again = await alice.get(FLOWS)
    async with bff(settings=settings, principal=BOB) as bob:
        reader = await bob.get(FLOWS, headers={"If-None-Match": writer.headers["etag"]})
    assert writer.headers["etag"] == writer_again.headers["etag"]
    assert reader.status_code == 200, "the writer's tag is not the reader's"
    assert reader.headers["etag"] != writer.headers["etag"]
    assert reader.content != b""


async def test_a_changed_list_has_a_new_tag(bff: BffFactory, upstream: respx.MockRouter) -> None:
    renamed = {"delivery_flows": [upstream_flow(name="renamed")], "next_cursor": None}
    upstream.get(UP_FLOWS).mock(
        side_effect=[httpx.Response(200, json=TWO_FLOWS), httpx.Response(200, json=renamed)]
    )
    async with bff() as client:
        before = await client.get(FLOWS)
        after = await client.get(FLOWS, headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200
    assert after.headers["etag"] != before.headers["etag"]
    assert [flow["name"] for flow in after.json()["items"]] == ["renamed"]


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        ("{tag}", 304),
        ("W/{tag}", 304),
        ('"other", W/{tag}', 304),
        (",, {tag} ,", 304),
        ("*", 304),
        ('"other"', 200),
        ("{bare}", 200),
        ("{tag} junk", 200),
        ('*, "other"', 200),
        ('"unterminated', 200),
        ("W/", 200),
        ("", 200),
        ('"\u00e9"', 200),
        (",".join(['"x"'] * 2000), 200),
    ],
)
async def test_if_none_match_on_a_list_compares_weakly_and_a_malformed_one_is_ignored(
    bff: BffFactory, upstream: respx.MockRouter, if_none_match: str, status: int
) -> None:
    upstream.get(UP_FLOWS).respond(json=TWO_FLOWS)
    async with bff() as client:
        tag = (await client.get(FLOWS)).headers["etag"]
        value = if_none_match.format(tag=tag, bare=tag.strip('"'))
        response = await client.get(FLOWS, headers=[("If-None-Match", value.encode("latin-1"))])
    assert response.status_code == status, value
    assert response.headers["etag"] == tag
    assert (response.content == b"") is (status == 304)


async def test_if_none_match_field_lines_make_one_list(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    upstream.get(UP_FLOWS).respond(json=TWO_FLOWS)
    async with bff() as client:
        tag = (await client.get(FLOWS)).headers["etag"]
        response = await client.get(
            FLOWS, headers=[("If-None-Match", '"other"'), ("If-None-Match", tag)]
        )
    assert response.status_code == 304


async def test_flow_of_another_cluster_is_not_found(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    upstream.get(f"{UP_FLOWS}/flow_eu").respond(
        json=upstream_flow("flow_eu", cluster_id="plane_dev_eu_west_1")
    )
    put = upstream.put(f"{UP_FLOWS}/flow_eu")
    delete = upstream.delete(f"{UP_FLOWS}/flow_eu")
    body = {"name": "n", "sourceId": "ing_a", "destinationId": "dest_b"}
    async with bff() as client:
        got = await client.get(f"{FLOWS}/flow_eu")
        updated = await client.put(f"{FLOWS}/flow_eu", json=body)
        deleted = await client.delete(f"{FLOWS}/flow_eu")
    assert [got.status_code, updated.status_code, deleted.status_code] == [404, 404, 404]
    assert got.json()["type"] == "https://api.zen-mesh.io/errors/not-found"
    assert not put.called and not delete.called


async def test_update_relays_if_match_and_lost_update_is_412(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow(version=2))
    put = upstream.put(f"{UP_FLOWS}/flow_1").respond(
        412,
        json={
            "type": "https://api.zen-mesh.io/errors/precondition-failed",
            "title": "Precondition Failed",
            "status": 412,
            "detail": "version is 2",
            "instance": "req_up",
        },
        headers={"Content-Type": "application/problem+json"},
    )
    async with bff() as client:
        response = await client.put(
            f"{FLOWS}/flow_1",
            json={"name": "n", "sourceId": "ing_a", "destinationId": "dest_b"},
            headers={"If-Match": '"1"'},
        )
    assert response.status_code == 412
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://api.zen-mesh.io/errors/precondition-failed"
    assert problem["instance"] == response.headers["x-request-id"]
    assert put.calls.last.request.headers["if-match"] == '"1"'


async def test_update_success(bff: BffFactory, upstream: respx.MockRouter) -> None:
    upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow(version=1))
    upstream.put(f"{UP_FLOWS}/flow_1").respond(
        json=upstream_flow(version=2, name="renamed"), headers={"ETag": '"2"'}
    )
    async with bff() as client:
        response = await client.put(
            f"{FLOWS}/flow_1",
            json={
                "name": "renamed",
                "sourceId": "ing_stripe_prod",
                "destinationId": "dest_orders_api",
            },
            headers={"If-Match": '"1"'},
        )
    assert response.status_code == 200
    assert response.json()["name"] == "renamed"
    assert response.headers["etag"] == '"2"'


async def test_delete_returns_204(bff: BffFactory, upstream: respx.MockRouter) -> None:
    upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow())
    route = upstream.delete(f"{UP_FLOWS}/flow_1").respond(204)
    async with bff() as client:
        response = await client.delete(f"{FLOWS}/flow_1", headers={"If-Match": '"1"'})
    assert response.status_code == 204
    assert route.calls.last.request.headers["if-match"] == '"1"'


async def test_an_if_match_list_with_tabs_reaches_the_upstream_as_one_clean_list(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    # RFC 9110 allows tabs around the commas; the upstream gets the tags joined plainly.
    upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow())
    route = upstream.delete(f"{UP_FLOWS}/flow_1").respond(204)
    async with bff() as client:
        response = await client.delete(
            f"{FLOWS}/flow_1", headers={"If-Match": 'W/"1",\t\t"2" ,"3"'}
        )
    assert response.status_code == 204
    assert route.calls.last.request.headers["if-match"] == 'W/"1", "2", "3"'


async def test_clusters_and_options(bff: BffFactory, upstream: respx.MockRouter) -> None:
    async with bff(principal=BOB) as client:
        clusters = await client.get("/api/bff/v1/tenants/ten_acme/clusters")
        options = await client.get(
            "/api/bff/v1/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flow-options"
        )
    assert [c["id"] for c in clusters.json()["items"]] == [
        "plane_dev_us_east_1",
        "plane_dev_eu_west_1",
    ]
    assert options.json() == {
        "clusterId": "plane_dev_us_east_1",
        "sources": [
            {"id": "ing_stripe_prod", "name": "Stripe production"},
            {"id": "ing_github_ci", "name": "GitHub CI"},
        ],
        "destinations": [{"id": "dest_orders_api", "name": "Orders API"}],
        "defaults": {"retryPolicy": {"maxAttempts": 3, "backoffSeconds": 10}},
        "permissions": {"read": True, "create": False, "update": False, "delete": False},
    }


async def test_unknown_cluster_is_404_without_listing_flows(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    flows = upstream.get(UP_FLOWS)
    async with bff() as client:
        response = await client.get(
            "/api/bff/v1/tenants/ten_acme/clusters/plane_unknown/delivery-flows"
        )
    assert response.status_code == 404
    assert not flows.called


async def test_denied_calls_never_reach_upstream(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    body = {"name": "n", "sourceId": "ing_a", "destinationId": "dest_b"}
    async with bff(principal=BOB) as client:
        create = await client.post(FLOWS, json=body)
        update = await client.put(f"{FLOWS}/flow_1", json=body)
        delete = await client.delete(f"{FLOWS}/flow_1")
    for response in (create, update, delete):
        assert response.status_code == 403
        assert response.json()["type"] == "https://api.zen-mesh.io/errors/insufficient-scope"
        assert response.json()["required_scope"] == "write:delivery-flows"
    async with bff(principal=CAROL) as client:
        other_tenant = await client.get(FLOWS)
    assert other_tenant.status_code == 403
    assert other_tenant.json()["type"] == "https://api.zen-mesh.io/errors/tenant-forbidden"
    async with bff(principal=None) as client:
        anonymous = await client.get(FLOWS)
    assert anonymous.status_code == 401
    assert anonymous.json()["type"] == "https://api.zen-mesh.io/errors/authentication-required"
    assert "www-authenticate" in anonymous.headers
    assert len(upstream.calls) == 0


async def test_request_id_is_honoured_or_generated(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    route = upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    async with bff() as client:
        mine = await client.get(FLOWS, headers={"X-Request-ID": "req_from_the_ui_1"})
        hostile = await client.get(FLOWS, headers={"X-Request-ID": "bad id\twith spaces"})
    assert mine.headers["x-request-id"] == "req_from_the_ui_1"
    assert route.calls[0].request.headers["x-request-id"] == "req_from_the_ui_1"
    assert hostile.headers["x-request-id"].startswith("req_")
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"


async def test_security_headers_on_every_response(bff: BffFactory) -> None:
    async with bff(principal=None) as client:
        response = await client.get(FLOWS)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


async def test_upstream_cookies_and_server_headers_never_come_back(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    upstream.get(UP_FLOWS).mock(
        return_value=httpx.Response(
            200,
            json={"delivery_flows": [], "next_cursor": None},
            headers={"Set-Cookie": "upstream=1", "Server": "backend/1.2"},
        )
    )
    async with bff() as client:
        response = await client.get(FLOWS)
    assert "set-cookie" not in response.headers
    assert "backend" not in response.headers.get("server", "")


async def test_numbers_too_long_for_int_are_client_errors(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    # int() refuses more than 4300 digits and isdigit() accepts "²": neither may become a 500.
    route = upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    async with bff() as client:
        long_limit = await client.get(f"{FLOWS}?limit={'1' * 4301}")
        padded_limit = await client.get(f"{FLOWS}?limit={'0' * 4400}7")
        long_size = await client.post(
            FLOWS,
            content=b"{}",
            headers={"Content-Type": "application/json", "Content-Length": "9" * 5000},
        )
        odd_size = await client.post(
            FLOWS,
            content=b"{}",
            headers={"Content-Type": "application/json", "Content-Length": b"\xb2"},
        )
    assert long_limit.status_code == 400
    assert [e["field"] for e in long_limit.json()["errors"]] == ["limit"]
    assert padded_limit.status_code == 200
    assert route.calls.last.request.url.params["limit"] == "7"
    assert long_size.status_code == 413
    assert long_size.json()["type"] == "https://api.zen-mesh.io/errors/payload-too-large"
    # Not a size at all: the body is read as sent, and found wanting.
    assert odd_size.status_code == 400
    assert odd_size.json()["type"] == "https://api.zen-mesh.io/errors/validation-error"
