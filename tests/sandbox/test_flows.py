from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.support.clock import FakeClock
from tests.support.sandbox_app import (
    ACME_RW,
    FLOWS_PATH,
    GLOBEX_RW,
    create_flow,
    flow_body,
    read_problem,
)

FLOW_ID = re.compile(r"flow_[0-9A-HJKMNP-TV-Z]{26}")
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


async def test_create_returns_the_flow_with_defaults_etag_and_location(
    client: httpx.AsyncClient,
) -> None:
    response = await create_flow(client)
    flow = response.json()
    assert FLOW_ID.fullmatch(flow["id"])
    assert flow == {
        "id": flow["id"],
        "tenant_id": "ten_acme",
        "cluster_id": "plane_dev_us_east_1",
        "name": "stripe-to-orders",
        "source_id": "ing_stripe_prod",
        "destination_id": "dest_orders_api",
        "config": {"retry_policy": {"max_attempts": 3, "backoff_seconds": 10}},
        "version": 1,
        "created_at": flow["created_at"],
        "updated_at": flow["created_at"],
    }
    assert RFC3339_UTC.fullmatch(flow["created_at"])
    assert response.headers["etag"] == '"1"'
    assert response.headers["location"] == f"{FLOWS_PATH}/{flow['id']}"
    assert response.headers["content-type"] == "application/json"


async def test_create_keeps_an_explicit_retry_policy(client: httpx.AsyncClient) -> None:
    config = {"retry_policy": {"max_attempts": 10, "backoff_seconds": 3600}}
    flow = (await create_flow(client, config=config)).json()
    assert flow["config"] == config
    partial = {"retry_policy": {"max_attempts": 1}}
    flow = (await create_flow(client, name="other", config=partial)).json()
    assert flow["config"]["retry_policy"] == {"max_attempts": 1, "backoff_seconds": 10}


async def test_get_returns_the_stored_flow_with_its_etag(client: httpx.AsyncClient) -> None:
    created = (await create_flow(client)).json()
    response = await client.get(f"{FLOWS_PATH}/{created['id']}", headers=ACME_RW)
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == '"1"'


async def test_list_returns_created_flows_newest_first_and_filters_by_cluster(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    east = (await create_flow(client)).json()
    clock.advance(1)
    eu = (
        await create_flow(
            client,
            name="shopify-eu",
            cluster_id="plane_dev_eu_west_1",
            source_id="ing_shopify_eu",
            destination_id="dest_eu_warehouse",
        )
    ).json()
    everything = (await client.get(FLOWS_PATH, headers=ACME_RW)).json()
    assert everything == {"delivery_flows": [eu, east], "next_cursor": None}
    only_eu = await client.get(
        FLOWS_PATH, params={"cluster_id": "plane_dev_eu_west_1"}, headers=ACME_RW
    )
    assert only_eu.json()["delivery_flows"] == [eu]


async def test_list_with_a_cluster_of_another_tenant_is_a_validation_error(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        FLOWS_PATH, params={"cluster_id": "plane_globex_main"}, headers=ACME_RW
    )
    assert response.status_code == 400
    assert read_problem(response)["errors"][0]["field"] == "cluster_id"


async def test_put_replaces_every_field_and_bumps_the_version(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = (
        await create_flow(
            client, config={"retry_policy": {"max_attempts": 7, "backoff_seconds": 5}}
        )
    ).json()
    clock.advance(5)
    body = flow_body(name="renamed", destination_id="dest_billing_svc", source_id="ing_github_ci")
    response = await client.put(f"{FLOWS_PATH}/{created['id']}", json=body, headers=ACME_RW)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["version"] == 2
    assert response.headers["etag"] == '"2"'
    assert updated["name"] == "renamed"
    assert updated["source_id"] == "ing_github_ci"
    assert updated["destination_id"] == "dest_billing_svc"
    # Full replacement: the omitted retry policy returns to its defaults.
    assert updated["config"]["retry_policy"] == {"max_attempts": 3, "backoff_seconds": 10}
    assert updated["created_at"] == created["created_at"]
    assert updated["updated_at"] > created["updated_at"]
    fetched = await client.get(f"{FLOWS_PATH}/{created['id']}", headers=ACME_RW)
    assert fetched.json() == updated


async def test_put_cannot_move_a_flow_to_another_cluster(client: httpx.AsyncClient) -> None:
    created = (await create_flow(client)).json()
    body = flow_body(
        cluster_id="plane_dev_eu_west_1",
        source_id="ing_shopify_eu",
        destination_id="dest_eu_warehouse",
    )
    response = await client.put(f"{FLOWS_PATH}/{created['id']}", json=body, headers=ACME_RW)
    assert response.status_code == 400
    document = read_problem(response)
    assert document["errors"] == [
        {
            "field": "cluster_id",
            "message": "cannot be changed; create a new flow",
            "code": "immutable",
        }
    ]
    unchanged = await client.get(f"{FLOWS_PATH}/{created['id']}", headers=ACME_RW)
    assert unchanged.json() == created


async def test_delete_removes_the_flow(client: httpx.AsyncClient) -> None:
    created = (await create_flow(client)).json()
    response = await client.delete(f"{FLOWS_PATH}/{created['id']}", headers=ACME_RW)
    assert response.status_code == 204
    assert response.content == b""
    gone = await client.get(f"{FLOWS_PATH}/{created['id']}", headers=ACME_RW)
    assert gone.status_code == 404
    assert read_problem(gone)["type"].endswith("/not-found")
    again = await client.delete(f"{FLOWS_PATH}/{created['id']}", headers=ACME_RW)
    assert again.status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_unknown_flow_is_not_found(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(
        method,
        f"{FLOWS_PATH}/flow_01JD0000000000000000000000",
        json=flow_body() if method == "PUT" else None,
        headers=ACME_RW,
    )
    assert response.status_code == 404
    assert read_problem(response)["title"] == "Not Found"


async def test_flows_of_another_tenant_are_invisible(client: httpx.AsyncClient) -> None:
    created = (await create_flow(client)).json()
    globex_flows = "/v1/tenants/ten_globex/delivery-flows"
    listing = await client.get(globex_flows, headers=GLOBEX_RW)
    assert listing.json() == {"delivery_flows": [], "next_cursor": None}
    response = await client.get(f"{globex_flows}/{created['id']}", headers=GLOBEX_RW)
    assert response.status_code == 404


async def test_duplicate_name_in_the_same_cluster_is_a_conflict(
    client: httpx.AsyncClient,
) -> None:
    await create_flow(client, name="same")
    response = await client.post(FLOWS_PATH, json=flow_body(name="same"), headers=ACME_RW)
    assert response.status_code == 409
    assert read_problem(response)["type"] == "https://api.zen-mesh.io/errors/conflict"
    # The same name in another cluster of the tenant is fine.
    await create_flow(
        client,
        name="same",
        cluster_id="plane_dev_eu_west_1",
        source_id="ing_shopify_eu",
        destination_id="dest_eu_warehouse",
    )


async def test_renaming_onto_a_taken_name_is_a_conflict(client: httpx.AsyncClient) -> None:
    await create_flow(client, name="first")
    second = (await create_flow(client, name="second")).json()
    response = await client.put(
        f"{FLOWS_PATH}/{second['id']}", json=flow_body(name="first"), headers=ACME_RW
    )
    assert response.status_code == 409
    kept = await client.put(
        f"{FLOWS_PATH}/{second['id']}", json=flow_body(name="second"), headers=ACME_RW
    )
    assert kept.status_code == 200


NOT_V1 = "not offered in V1"


@pytest.mark.parametrize(
    ("body", "field", "code", "message"),
    [
        (flow_body(name=...), "name", "required", "is required"),
        (flow_body(name=""), "name", "too_short", "must not be empty"),
        (flow_body(name="   "), "name", "too_short", "must not be blank"),
        (flow_body(name="x" * 129), "name", "too_long", "must be at most 128 characters"),
        (
            flow_body(name="a\nb"),
            "name",
            "invalid",
            "must not contain control, formatting or direction characters",
        ),
        (flow_body(name=5), "name", "type", "must be a string"),
        (flow_body(cluster_id=...), "cluster_id", "required", "is required"),
        (flow_body(cluster_id="plane_nope"), "cluster_id", "not_found", "cluster not found"),
        (flow_body(cluster_id="plane_globex_main"), "cluster_id", "not_found", "cluster not found"),
        (flow_body(source_id=...), "source_id", "required", "is required"),
        (flow_body(source_id="ing_nope"), "source_id", "not_found", "endpoint not found"),
        (flow_body(source_id="ing_globex_orders"), "source_id", "not_found", "endpoint not found"),
        (
            flow_body(source_id="ing_shopify_eu"),
            "source_id",
            "not_found",
            "endpoint not found in cluster plane_dev_us_east_1",
        ),
        (flow_body(destination_id=["x"]), "destination_id", "type", "must be a string"),
        (flow_body(destination_id="dest_nope"), "destination_id", "not_found", "target not found"),
        (
            flow_body(destination_id="dest_eu_warehouse"),
            "destination_id",
            "not_found",
            "target not found in cluster plane_dev_us_east_1",
        ),
        (flow_body(config=[]), "config", "type", "must be an object"),
        (flow_body(config={"retry_policy": 3}), "config.retry_policy", "type", "must be an object"),
        *[
            (
                flow_body(config={"retry_policy": {"max_attempts": value}}),
                "config.retry_policy.max_attempts",
                code,
                message,
            )
            for value, code, message in [
                (0, "out_of_range", "must be between 1 and 10"),
                (11, "out_of_range", "must be between 1 and 10"),
                (-1, "out_of_range", "must be between 1 and 10"),
                (2**70, "out_of_range", "must be between 1 and 10"),
                (2.5, "type", "must be an integer"),
                (3.0, "type", "must be an integer"),
                (True, "type", "must be an integer"),
                ("3", "type", "must be an integer"),
            ]
        ],
        *[
            (
                flow_body(config={"retry_policy": {"backoff_seconds": value}}),
                "config.retry_policy.backoff_seconds",
                "out_of_range",
                "must be between 1 and 3600",
            )
            for value in (0, 3601)
        ],
        (flow_body(colour="red"), "colour", "unknown_field", "unknown field"),
        (flow_body(config={"timeout": 1}), "config.timeout", "unknown_field", "unknown field"),
        (
            flow_body(config={"retry_policy": {"jitter": True}}),
            "config.retry_policy.jitter",
            "unknown_field",
            "unknown field",
        ),
        (flow_body(id="flow_mine"), "id", "read_only", "is read-only and set by the server"),
        (flow_body(version=3), "version", "read_only", "is read-only and set by the server"),
        (
            flow_body(destination_ids=["dest_orders_api"]),
            "destination_ids",
            "not_supported",
            NOT_V1,
        ),
        (flow_body(targets=[]), "targets", "not_supported", NOT_V1),
        (flow_body(gitops={"repo": "x"}), "gitops", "not_supported", NOT_V1),
        (flow_body(git_ref="main"), "git_ref", "not_supported", NOT_V1),
        (flow_body(draft=True), "draft", "not_supported", NOT_V1),
        (flow_body(status="published"), "status", "not_supported", NOT_V1),
        (flow_body(published=False), "published", "not_supported", NOT_V1),
        ([flow_body()], "body", "type", "must be a JSON object"),
        ("name", "body", "type", "must be a JSON object"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_invalid_bodies_are_refused_naming_the_field(
    client: httpx.AsyncClient, method: str, body: Any, field: str, code: str, message: str
) -> None:
    url = FLOWS_PATH
    if method == "PUT":
        url = f"{FLOWS_PATH}/{(await create_flow(client, name='existing')).json()['id']}"
    response = await client.request(method, url, json=body, headers=ACME_RW)
    assert response.status_code == 400, response.text
    document = read_problem(response)
    assert document["type"] == "https://api.zen-mesh.io/errors/validation-error"
    assert document["title"] == "Validation Error"
    first = document["errors"][0]
    assert (first["field"], first["code"]) == (field, code)
    assert message in first["message"]
    assert document["detail"] == f"{field}: {first['message']}"
    listing = (await client.get(FLOWS_PATH, headers=ACME_RW)).json()["delivery_flows"]
    assert all(flow["name"] in {"existing"} for flow in listing)


async def test_the_contract_example_detail_for_an_unknown_source(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        FLOWS_PATH, json=flow_body(source_id="ing_abc123"), headers=ACME_RW
    )
    assert read_problem(response)["detail"] == "source_id: endpoint not found"


async def test_every_invalid_field_is_reported(client: httpx.AsyncClient) -> None:
    body = {
        "name": "",
        "cluster_id": "plane_dev_us_east_1",
        "config": {"retry_policy": {"max_attempts": 0}},
    }
    response = await client.post(FLOWS_PATH, json=body, headers=ACME_RW)
    fields = [error["field"] for error in read_problem(response)["errors"]]
    assert fields == ["name", "source_id", "destination_id", "config.retry_policy.max_attempts"]


async def test_null_optional_config_means_defaults(client: httpx.AsyncClient) -> None:
    flow = (await create_flow(client, config=None)).json()
    assert flow["config"]["retry_policy"] == {"max_attempts": 3, "backoff_seconds": 10}


async def test_a_body_that_is_not_utf_8_is_400_not_500(client: httpx.AsyncClient) -> None:
    response = await client.post(
        FLOWS_PATH,
        content=b'{"name": "a\xff\xfeb", "cluster_id": "plane_dev_us_east_1"}',
        headers={**ACME_RW, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert read_problem(response)["errors"][0]["code"] == "malformed_json"


@pytest.mark.parametrize(
    "name", ["pay\u202eload", "pay\u200bload", "\ufeffpay", "pay\x85load", "pay\u2028load"]
)
async def test_names_with_invisible_or_direction_characters_are_refused(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.post(FLOWS_PATH, json=flow_body(name=name), headers=ACME_RW)
    assert response.status_code == 400, response.text
    assert [error["field"] for error in read_problem(response)["errors"]] == ["name"]


async def test_names_in_any_script_are_kept(client: httpx.AsyncClient) -> None:
    response = await client.post(
        FLOWS_PATH, json=flow_body(name="支払い-Zahlung δ"), headers=ACME_RW
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "支払い-Zahlung δ"
