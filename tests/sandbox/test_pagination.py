from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from sandbox.pagination import CursorCodec
from tests.support.clock import FakeClock
from tests.support.sandbox_app import ACME_RW, FLOWS_PATH, GLOBEX_RW, create_flow, read_problem


async def walk(client: httpx.AsyncClient, url: str, key: str, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(url, params=query, headers=ACME_RW)
        assert response.status_code == 200, response.text
        document = response.json()
        pages.append([item["id"] for item in document[key]])
        cursor = document["next_cursor"]
        if cursor is None:
            return pages


async def make_flows(client: httpx.AsyncClient, clock: FakeClock, count: int) -> list[str]:
    ids = []
    for i in range(count):
        # Pairs share a timestamp so that the id breaks ties.
        if i % 2 == 0:
            clock.advance(1)
        ids.append((await create_flow(client, name=f"flow-{i:02d}")).json()["id"])
    return ids


async def test_walking_every_page_returns_each_flow_once_newest_first(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    ids = await make_flows(client, clock, 23)
    pages = await walk(client, FLOWS_PATH, "delivery_flows", limit=5)
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    flattened = [flow_id for page in pages for flow_id in page]
    # Newest first; flows created in the same instant come in descending id order.
    expected = sorted(ids, key=lambda flow_id: (ids.index(flow_id) // 2, flow_id), reverse=True)
    assert flattened == expected
    assert len(set(flattened)) == 23


async def test_default_page_size_is_20_and_max_is_100(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await make_flows(client, clock, 21)
    default = (await client.get(FLOWS_PATH, headers=ACME_RW)).json()
    assert len(default["delivery_flows"]) == 20
    assert default["next_cursor"] is not None
    everything = (await client.get(FLOWS_PATH, params={"limit": 100}, headers=ACME_RW)).json()
    assert len(everything["delivery_flows"]) == 21
    assert everything["next_cursor"] is None


async def test_an_exact_last_page_has_no_cursor(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await make_flows(client, clock, 4)
    assert [len(page) for page in await walk(client, FLOWS_PATH, "delivery_flows", limit=2)] == [
        2,
        2,
    ]


async def test_flows_created_while_paging_come_first_and_do_not_shift_later_pages(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    ids = await make_flows(client, clock, 4)
    first = (await client.get(FLOWS_PATH, params={"limit": 2}, headers=ACME_RW)).json()
    clock.advance(1)
    late = (await create_flow(client, name="late")).json()["id"]
    rest = await client.get(
        FLOWS_PATH, params={"limit": 10, "cursor": first["next_cursor"]}, headers=ACME_RW
    )
    shown = [flow["id"] for flow in first["delivery_flows"]]
    following = [flow["id"] for flow in rest.json()["delivery_flows"]]
    assert sorted(shown + following) == sorted(ids), "each older flow once, none skipped"
    assert late not in following
    again = (await client.get(FLOWS_PATH, params={"limit": 2}, headers=ACME_RW)).json()
    assert [flow["id"] for flow in again["delivery_flows"]] == [late, shown[0]]


async def test_a_cursor_from_the_oldest_first_order_is_refused(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A cursor issued before the list turned newest first would resume at the wrong place."""
    await make_flows(client, clock, 3)
    cursor = (await client.get(FLOWS_PATH, params={"limit": 1}, headers=ACME_RW)).json()[
        "next_cursor"
    ]
    payload, _, _ = cursor.partition(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    document["k"] = "delivery_flows"
    codec = CursorCodec(client.app.state.store.cursor_secret)  # type: ignore[attr-defined]
    old = codec.encode(
        kind=document["k"],
        tenant_id=document["t"],
        filter_key=document["f"],
        position=document["p"],
    )
    response = await client.get(FLOWS_PATH, params={"cursor": old}, headers=ACME_RW)
    assert response.status_code == 400
    assert read_problem(response)["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "", "1.5", "٣", "9" * 30])
async def test_limit_outside_1_to_100_is_a_validation_error(
    client: httpx.AsyncClient, limit: str
) -> None:
    response = await client.get(FLOWS_PATH, params={"limit": limit}, headers=ACME_RW)
    assert response.status_code == 400
    assert read_problem(response)["errors"][0]["field"] == "limit"


def _tamper_position(cursor: str) -> str:
    payload, _, mac = cursor.partition(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    document["p"][0] = "1970-01-01T00:00:00.000000Z"
    forged = base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()
    return f"{forged}.{mac}"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c + "x",
        lambda c: c[:-1],
        lambda c: "x" + c,
        lambda c: c.replace(".", ""),
        lambda c: c.split(".")[0],
        _tamper_position,
        lambda c: "",
        lambda c: "%%%",
        lambda c: "é.é",
        lambda c: "a" * 5000,
    ],
)
async def test_a_tampered_cursor_is_a_validation_error(
    client: httpx.AsyncClient, clock: FakeClock, mutate: Any
) -> None:
    await make_flows(client, clock, 3)
    cursor = (await client.get(FLOWS_PATH, params={"limit": 1}, headers=ACME_RW)).json()[
        "next_cursor"
    ]
    response = await client.get(FLOWS_PATH, params={"cursor": mutate(cursor)}, headers=ACME_RW)
    assert response.status_code == 400
    document = read_problem(response)
    assert document["errors"][0]["field"] == "cursor"
    assert document["detail"] == "cursor: is not a valid cursor for this list"


async def test_a_cursor_only_works_for_the_list_it_came_from(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await make_flows(client, clock, 3)
    cursor = (await client.get(FLOWS_PATH, params={"limit": 1}, headers=ACME_RW)).json()[
        "next_cursor"
    ]
    other_filter = await client.get(
        FLOWS_PATH, params={"cursor": cursor, "cluster_id": "plane_dev_us_east_1"}, headers=ACME_RW
    )
    assert other_filter.status_code == 400
    other_list = await client.get(
        "/v1/tenants/ten_acme/clusters", params={"cursor": cursor}, headers=ACME_RW
    )
    assert other_list.status_code == 400
    other_tenant = await client.get(
        "/v1/tenants/ten_globex/delivery-flows", params={"cursor": cursor}, headers=GLOBEX_RW
    )
    assert other_tenant.status_code == 400


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [
        ("clusters", "clusters", ["plane_dev_eu_west_1", "plane_dev_us_east_1"]),
        ("ingesters", "ingesters", ["ing_github_ci", "ing_shopify_eu", "ing_stripe_prod"]),
        (
            "destinations",
            "destinations",
            ["dest_billing_svc", "dest_eu_warehouse", "dest_orders_api"],
        ),
    ],
)
async def test_catalog_lists_page_one_item_at_a_time(
    client: httpx.AsyncClient, path: str, key: str, expected: list[str]
) -> None:
    pages = await walk(client, f"/v1/tenants/ten_acme/{path}", key, limit=1)
    assert pages == [[item] for item in expected]


async def test_unknown_and_repeated_query_parameters_are_refused(
    client: httpx.AsyncClient,
) -> None:
    unknown = await client.get(FLOWS_PATH, params={"sort": "name"}, headers=ACME_RW)
    assert unknown.status_code == 400
    assert read_problem(unknown)["detail"] == "sort: unknown query parameter"
    repeated = await client.get(
        FLOWS_PATH, params=[("limit", "1"), ("limit", "2")], headers=ACME_RW
    )
    assert repeated.status_code == 400
    assert read_problem(repeated)["errors"][0]["field"] == "limit"
