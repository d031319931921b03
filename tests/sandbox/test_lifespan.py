from __future__ import annotations

import sqlite3

import httpx
import pytest

import sandbox
from tests.support.sandbox_app import ACME_RW, FLOWS_PATH, dev_settings


async def test_the_lifespan_closes_the_database() -> None:
    app = sandbox.create_app(dev_settings())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test"
        ) as client,
    ):
        assert (await client.get(FLOWS_PATH, headers=ACME_RW)).status_code == 200
    with pytest.raises(sqlite3.ProgrammingError):
        app.state.store.get_flow("ten_acme", "flow_x")


async def test_each_app_has_its_own_memory_database() -> None:
    first = sandbox.create_app(dev_settings())
    second = sandbox.create_app(dev_settings())
    body = {
        "name": "only-in-first",
        "cluster_id": "plane_dev_us_east_1",
        "source_id": "ing_stripe_prod",
        "destination_id": "dest_orders_api",
    }
    try:
        transport_one = httpx.ASGITransport(app=first)
        transport_two = httpx.ASGITransport(app=second)
        async with (
            httpx.AsyncClient(transport=transport_one, base_url="http://a") as one,
            httpx.AsyncClient(transport=transport_two, base_url="http://b") as two,
        ):
            assert (await one.post(FLOWS_PATH, json=body, headers=ACME_RW)).status_code == 201
            listing = await two.get(FLOWS_PATH, headers=ACME_RW)
            assert listing.json()["delivery_flows"] == []
    finally:
        first.state.store.close()
        second.state.store.close()
