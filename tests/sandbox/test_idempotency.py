from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import sandbox
from sandbox.store import IN_FLIGHT_STALE_SECONDS
from tests.support.clock import FakeClock
from tests.support.sandbox_app import (
    ACME_RO,
    ACME_RW,
    DEV_CONFIG,
    FLOWS_PATH,
    GLOBEX_RW,
    bearer,
    create_flow,
    dev_settings,
    flow_body,
    mint,
    read_problem,
)


def keyed(key: str, headers: dict[str, str] = ACME_RW) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


async def flow_count(client: httpx.AsyncClient) -> int:
    response = await client.get(FLOWS_PATH, params={"limit": 100}, headers=ACME_RW)
    return len(response.json()["delivery_flows"])


async def test_a_retried_create_replays_the_first_response(client: httpx.AsyncClient) -> None:
    first = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("create-1"))
    assert first.status_code == 201
    assert "idempotency-replayed" not in first.headers
    again = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("create-1"))
    assert again.status_code == 201
    assert again.headers["idempotency-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["content-type"] == "application/json"
    assert await flow_count(client) == 1


async def test_the_replay_does_not_depend_on_key_order_in_the_body(
    client: httpx.AsyncClient,
) -> None:
    body = flow_body()
    await client.post(FLOWS_PATH, json=body, headers=keyed("k"))
    reordered = dict(reversed(list(body.items())))
    again = await client.post(FLOWS_PATH, json=reordered, headers=keyed("k"))
    assert again.headers["idempotency-replayed"] == "true"


async def test_the_same_key_with_a_different_body_is_422(client: httpx.AsyncClient) -> None:
    await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("k"))
    response = await client.post(FLOWS_PATH, json=flow_body(name="other"), headers=keyed("k"))
    assert response.status_code == 422
    assert read_problem(response)["type"].endswith("/idempotency-key-reused")
    assert await flow_count(client) == 1


async def test_the_same_key_on_another_path_is_422(client: httpx.AsyncClient) -> None:
    created = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("k"))
    flow_url = f"{FLOWS_PATH}/{created.json()['id']}"
    response = await client.put(flow_url, json=flow_body(), headers=keyed("k"))
    assert response.status_code == 422


async def test_keys_are_per_tenant(client: httpx.AsyncClient) -> None:
    await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("shared"))
    globex_body = {
        "name": "stripe-to-orders",
        "cluster_id": "plane_globex_main",
        "source_id": "ing_globex_orders",
        "destination_id": "dest_globex_erp",
    }
    response = await client.post(
        "/v1/tenants/ten_globex/delivery-flows",
        json=globex_body,
        headers=keyed("shared", GLOBEX_RW),
    )
    assert response.status_code == 201
    assert "idempotency-replayed" not in response.headers


async def test_keys_do_not_depend_on_the_credential(client: httpx.AsyncClient) -> None:
    first = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("k"))
    token = bearer(mint())
    again = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("k", token))
    assert again.headers["idempotency-replayed"] == "true"
    assert again.json() == first.json()


async def test_keys_expire_after_24_hours(client: httpx.AsyncClient, clock: FakeClock) -> None:
    first = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("k"))
    clock.advance(24 * 3600 - 1)
    assert (await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("k"))).headers.get(
        "idempotency-replayed"
    ) == "true"
    clock.advance(2)
    await client.delete(f"{FLOWS_PATH}/{first.json()['id']}", headers=ACME_RW)
    fresh = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("k"))
    assert fresh.status_code == 201
    assert "idempotency-replayed" not in fresh.headers
    assert fresh.json()["id"] != first.json()["id"]


async def test_a_key_in_flight_is_409(client: httpx.AsyncClient, clock: FakeClock) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    # Another worker has claimed the key for the very same request and not finished yet.
    response = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("probe"))
    fingerprint_source = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("probe"))
    assert fingerprint_source.headers["idempotency-replayed"] == "true"
    store._db.execute(  # rewind the record to its in-flight state
        "UPDATE idempotency_keys SET completed = 0, claimed_at = ? WHERE key = 'probe'",
        (clock.now,),
    )
    in_flight = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("probe"))
    assert in_flight.status_code == 409
    assert "in progress" in read_problem(in_flight)["detail"]
    # A claim whose worker died is taken over once it is stale.
    await client.delete(f"{FLOWS_PATH}/{response.json()['id']}", headers=ACME_RW)
    clock.advance(IN_FLIGHT_STALE_SECONDS + 1)
    taken_over = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("probe"))
    assert taken_over.status_code == 201
    assert "idempotency-replayed" not in taken_over.headers


async def test_validation_failures_are_not_remembered(client: httpx.AsyncClient) -> None:
    bad = await client.post(FLOWS_PATH, json=flow_body(source_id="ing_nope"), headers=keyed("k"))
    assert bad.status_code == 400
    good = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("k"))
    assert good.status_code == 201
    assert "idempotency-replayed" not in good.headers


async def test_authorization_failures_do_not_consume_the_key(client: httpx.AsyncClient) -> None:
    denied = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("k", ACME_RO))
    assert denied.status_code == 403
    allowed = await client.post(FLOWS_PATH, json=flow_body(), headers=keyed("k"))
    assert allowed.status_code == 201
    assert "idempotency-replayed" not in allowed.headers


async def test_an_execution_outcome_such_as_a_conflict_is_replayed(
    client: httpx.AsyncClient,
) -> None:
    await create_flow(client, name="taken")
    first = await client.post(FLOWS_PATH, json=flow_body(name="taken"), headers=keyed("k"))
    assert first.status_code == 409
    again = await client.post(FLOWS_PATH, json=flow_body(name="taken"), headers=keyed("k"))
    assert again.status_code == 409
    assert again.headers["idempotency-replayed"] == "true"
    assert again.headers["content-type"] == "application/problem+json"


async def test_put_and_delete_replay(client: httpx.AsyncClient) -> None:
    flow_url = f"{FLOWS_PATH}/{(await create_flow(client)).json()['id']}"
    put = await client.put(flow_url, json=flow_body(name="v2"), headers=keyed("put"))
    put_again = await client.put(flow_url, json=flow_body(name="v2"), headers=keyed("put"))
    assert put.json()["version"] == put_again.json()["version"] == 2
    assert put_again.headers["idempotency-replayed"] == "true"
    assert put_again.headers["etag"] == '"2"'
    assert (await client.get(flow_url, headers=ACME_RW)).json()["version"] == 2
    deleted = await client.delete(flow_url, headers=keyed("del"))
    deleted_again = await client.delete(flow_url, headers=keyed("del"))
    assert deleted.status_code == deleted_again.status_code == 204
    assert deleted_again.headers["idempotency-replayed"] == "true"


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\tkey", "é"])
async def test_malformed_keys_are_refused(client: httpx.AsyncClient, key: str) -> None:
    headers = {**ACME_RW, "Idempotency-Key": key}
    response = await client.post(
        FLOWS_PATH, json=flow_body(), headers={k: v.encode() for k, v in headers.items()}
    )
    assert response.status_code == 400
    assert read_problem(response)["errors"][0]["field"] == "Idempotency-Key"
    assert await flow_count(client) == 0


async def test_twenty_concurrent_creates_with_one_key_make_exactly_one_flow(
    client: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(
        *(client.post(FLOWS_PATH, json=flow_body(), headers=keyed("burst")) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    created = [r for r in responses if r.status_code == 201]
    originals = [r for r in created if "idempotency-replayed" not in r.headers]
    assert len(originals) == 1
    assert {r.json()["id"] for r in created} == {originals[0].json()["id"]}
    for conflict in (r for r in responses if r.status_code == 409):
        assert "in progress" in read_problem(conflict)["detail"]
    assert await flow_count(client) == 1


async def test_fifty_concurrent_creates_with_distinct_keys_make_fifty_flows(
    client: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(
        *(
            client.post(FLOWS_PATH, json=flow_body(name=f"flow-{i}"), headers=keyed(f"key-{i}"))
            for i in range(50)
        )
    )
    assert [r.status_code for r in responses] == [201] * 50
    assert len({r.json()["id"] for r in responses}) == 50
    assert await flow_count(client) == 50


async def test_two_apps_on_one_database_file_share_keys_safely(
    make_client: Callable[..., httpx.AsyncClient], tmp_path: Path
) -> None:
    db = str(tmp_path / "shared.db")
    first = make_client(dev_settings(db=db))
    second = make_client(dev_settings(db=db))
    responses = await asyncio.gather(
        *(
            (first if i % 2 else second).post(FLOWS_PATH, json=flow_body(), headers=keyed("shared"))
            for i in range(20)
        )
    )
    assert set(r.status_code for r in responses) <= {201, 409}
    created_ids = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created_ids) == 1
    assert await flow_count(first) == await flow_count(second) == 1


# The sandbox in a process of its own, killed by SIGKILL's equivalent (os._exit) at the moment
# it records the response of a create: after the flow's INSERT ran, before anything committed.
_DIES_MID_WRITE = """
import asyncio, os, sqlite3, sys
import httpx
import sandbox

real_connect = sqlite3.connect

def connect(*args, **kwargs):
    db = real_connect(*args, **kwargs)
    def die_when_recording(sql):
        if sql.lstrip().upper().startswith("UPDATE IDEMPOTENCY_KEYS SET COMPLETED"):
            os._exit(9)
    db.set_trace_callback(die_when_recording)
    return db

sqlite3.connect = connect

async def main():
    app = sandbox.create_app(sandbox.load_settings(sys.argv[1], db=sys.argv[2]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://s") as c:
        await c.post(sys.argv[3], json={body!r}, headers={headers!r})
    os._exit(0)

asyncio.run(main())
"""


async def test_a_process_killed_mid_write_leaves_a_retry_that_writes_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "sandbox.db"
    body, headers = flow_body(name="crash-safe"), keyed("crash-1")
    script = _DIES_MID_WRITE.format(body=body, headers=headers)
    died = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(DEV_CONFIG), str(db), FLOWS_PATH
    )
    assert await died.wait() == 9, "the process did not die while recording the response"

    # Restarted, and asked again once the dead process's claim has gone stale.
    later = FakeClock(time.time() + IN_FLIGHT_STALE_SECONDS + 1)
    app = sandbox.create_app(sandbox.load_settings(DEV_CONFIG, db=str(db)), clock=later)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://s") as c:
        retried = await c.post(FLOWS_PATH, json=body, headers=headers)
        replayed = await c.post(FLOWS_PATH, json=body, headers=headers)
        names = [
            f["name"] for f in (await c.get(FLOWS_PATH, headers=ACME_RW)).json()["delivery_flows"]
        ]
    assert retried.status_code == 201, retried.text
    assert replayed.headers.get("idempotency-replayed") == "true"
    assert replayed.json()["id"] == retried.json()["id"]
    assert names.count("crash-safe") == 1
