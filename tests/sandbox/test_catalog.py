from __future__ import annotations

import httpx
import pytest

from tests.support.sandbox_app import ACME_RW, GLOBEX_RW, read_problem


async def test_clusters_of_a_tenant(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/tenants/ten_acme/clusters", headers=ACME_RW)
    assert response.status_code == 200
    assert response.json() == {
        "clusters": [
            {
                "id": "plane_dev_eu_west_1",
                "name": "Dev EU West 1",
                "region": "eu-west-1",
                "status": "active",
            },
            {
                "id": "plane_dev_us_east_1",
                "name": "Dev US East 1",
                "region": "us-east-1",
                "status": "active",
            },
        ],
        "next_cursor": None,
    }
    globex = await client.get("/v1/tenants/ten_globex/clusters", headers=GLOBEX_RW)
    assert [c["id"] for c in globex.json()["clusters"]] == ["plane_globex_main"]


async def test_ingesters_are_the_endpoints_of_the_tenant(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/v1/tenants/ten_acme/ingesters",
        params={"cluster_id": "plane_dev_us_east_1"},
        headers=ACME_RW,
    )
    assert response.json() == {
        "ingesters": [
            {
                "id": "ing_github_ci",
                "name": "GitHub CI",
                "type": "github",
                "cluster_id": "plane_dev_us_east_1",
            },
            {
                "id": "ing_stripe_prod",
                "name": "Stripe production",
                "type": "stripe",
                "cluster_id": "plane_dev_us_east_1",
            },
        ],
        "next_cursor": None,
    }
    everything = await client.get("/v1/tenants/ten_acme/ingesters", headers=ACME_RW)
    assert [i["id"] for i in everything.json()["ingesters"]] == [
        "ing_github_ci",
        "ing_shopify_eu",
        "ing_stripe_prod",
    ]


async def test_destinations_are_the_targets_of_the_tenant(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/v1/tenants/ten_acme/destinations",
        params={"cluster_id": "plane_dev_eu_west_1"},
        headers=ACME_RW,
    )
    assert response.json() == {
        "destinations": [
            {
                "id": "dest_eu_warehouse",
                "name": "EU warehouse",
                "url": "https://warehouse.eu.acme.example/ingest",
                "cluster_id": "plane_dev_eu_west_1",
            }
        ],
        "next_cursor": None,
    }


@pytest.mark.parametrize("path", ["ingesters", "destinations", "delivery-flows"])
async def test_filtering_by_a_foreign_cluster_is_refused(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(
        f"/v1/tenants/ten_acme/{path}", params={"cluster_id": "plane_globex_main"}, headers=ACME_RW
    )
    assert response.status_code == 400
    assert read_problem(response)["detail"] == "cluster_id: cluster not found"


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
