from __future__ import annotations

import json
import random
import string
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.sandbox_app import (
    ACME_RO,
    ACME_RW,
    FLOWS_PATH,
    create_flow,
    flow_body,
    read_problem,
)

LIMIT = 64 * 1024


async def test_bodies_over_64_kib_are_413(client: httpx.AsyncClient) -> None:
    body = json.dumps(flow_body(name="x" * LIMIT)).encode()
    response = await client.post(
        FLOWS_PATH, content=body, headers={**ACME_RW, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert read_problem(response)["type"].endswith("/payload-too-large")


async def test_a_body_of_exactly_64_kib_is_read(client: httpx.AsyncClient) -> None:
    text = json.dumps(flow_body())
    body = text[:-1] + " " * (LIMIT - len(text)) + "}"
    assert len(body) == LIMIT
    response = await client.post(
        FLOWS_PATH, content=body, headers={**ACME_RW, "Content-Type": "application/json"}
    )
    assert response.status_code == 201


async def test_chunked_bodies_are_counted_while_reading(client: httpx.AsyncClient) -> None:
    chunks_sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(100):
            chunks_sent += 1
            yield b" " * 4096

    response = await client.post(
        FLOWS_PATH, content=chunks(), headers={**ACME_RW, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    read_problem(response)


async def test_a_lying_small_content_length_is_still_capped(client: httpx.AsyncClient) -> None:
    # The declared length is not trusted: bytes are counted as they arrive.
    body = b" " * (LIMIT + 1)
    request = client.build_request(
        "POST", FLOWS_PATH, content=body, headers={**ACME_RW, "Content-Type": "application/json"}
    )
    request.headers["Content-Length"] = "10"
    response = await client.send(request)
    assert response.status_code == 413


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "json"],
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_writes_that_are_not_json_are_415(
    client: httpx.AsyncClient, content_type: str | None, method: str
) -> None:
    url = (
        FLOWS_PATH
        if method == "POST"
        else f"{FLOWS_PATH}/{(await create_flow(client)).json()['id']}"
    )
    headers = dict(ACME_RW)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await client.request(
        method, url, content=json.dumps(flow_body(name="n")), headers=headers
    )
    assert response.status_code == 415
    assert read_problem(response)["type"].endswith("/unsupported-media-type")


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "APPLICATION/JSON", "application/merge+json"],
)
async def test_json_media_types_with_parameters_are_accepted(
    client: httpx.AsyncClient, content_type: str
) -> None:
    response = await client.post(
        FLOWS_PATH,
        content=json.dumps(flow_body()),
        headers={**ACME_RW, "Content-Type": content_type},
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    "body",
    [b"", b"   ", b"{", b"{'name': 1}", b"[1,]", b"\xff\xfe", b"NaN", b"{}{}", b"[" * 5000],
)
async def test_malformed_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(
        FLOWS_PATH, content=body, headers={**ACME_RW, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    document = read_problem(response)
    assert document["type"].endswith("/validation-error")
    assert document["errors"][0]["field"] == "body"


async def test_deeply_nested_json_is_400_not_500(client: httpx.AsyncClient) -> None:
    body = b"[" * 60000 + b"]" * 60000
    response = await client.post(
        FLOWS_PATH, content=body[:LIMIT], headers={**ACME_RW, "Content-Type": "application/json"}
    )
    assert response.status_code == 400


async def test_authentication_comes_before_body_checks(client: httpx.AsyncClient) -> None:
    response = await client.post(FLOWS_PATH, content=b"{", headers={"Content-Type": "text/plain"})
    assert response.status_code == 401
    scoped = await client.post(FLOWS_PATH, content=b"{", headers={**ACME_RO, "Content-Type": "x/y"})
    assert scoped.status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", FLOWS_PATH, "GET, HEAD, POST"),
        ("DELETE", FLOWS_PATH, "GET, HEAD, POST"),
        ("POST", f"{FLOWS_PATH}/flow_x", "GET, HEAD, PUT, DELETE"),
        ("PATCH", f"{FLOWS_PATH}/flow_x", "GET, HEAD, PUT, DELETE"),
        ("POST", "/v1/tenants/ten_acme/clusters", "GET, HEAD"),
        ("DELETE", "/healthz", "GET, HEAD"),
    ],
)
async def test_unsupported_methods_are_405_with_allow(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path, headers=ACME_RW)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert read_problem(response)["type"].endswith("/method-not-allowed")


@pytest.mark.parametrize(
    "path", ["/", "/v1", "/v1/tenants", "/v1/tenants/ten_acme/flows", f"{FLOWS_PATH}/x/y", "/v2/x"]
)
async def test_unknown_paths_are_404_problems(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers=ACME_RW)
    assert response.status_code == 404
    read_problem(response)


async def test_a_sane_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get(FLOWS_PATH, headers={**ACME_RW, "X-Request-ID": "req_abc.123-x"})
    assert response.headers["x-request-id"] == "req_abc.123-x"
    denied = await client.get(FLOWS_PATH, headers={"X-Request-ID": "req_abc.123-x"})
    assert read_problem(denied)["instance"] == "req_abc.123-x"


@pytest.mark.parametrize(
    "request_id", ["", "has space", "a" * 129, "<script>", "-leading", "ré", "a/b", "a\tb"]
)
async def test_an_insane_request_id_is_replaced(client: httpx.AsyncClient, request_id: str) -> None:
    response = await client.get(FLOWS_PATH, headers={"X-Request-ID": request_id.encode()})
    generated = response.headers["x-request-id"]
    assert generated != request_id
    assert generated.startswith("req_")
    assert len(generated) == 28
    assert read_problem(response)["instance"] == generated


async def test_request_ids_are_unique_when_generated(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/healthz")).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20


async def test_an_unexpected_failure_is_a_generic_500_problem(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire at /var/secret/path")

    monkeypatch.setattr(store, "list_flows", explode)
    response = await client.get(FLOWS_PATH, headers={**ACME_RW, "X-Request-ID": "req_boom"})
    assert response.status_code == 500
    document = read_problem(response)
    assert document == {
        "type": "https://api.zen-mesh.io/errors/internal-error",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "The server could not complete the request.",
        "instance": "req_boom",
    }
    assert b"secret" not in response.content


async def test_a_failure_during_an_idempotent_write_frees_the_key(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    original = store.create_flow

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("transient")

    monkeypatch.setattr(store, "create_flow", explode)
    headers = {**ACME_RW, "Idempotency-Key": "retry-me"}
    assert (await client.post(FLOWS_PATH, json=flow_body(), headers=headers)).status_code == 500
    monkeypatch.setattr(store, "create_flow", original)
    retried = await client.post(FLOWS_PATH, json=flow_body(), headers=headers)
    assert retried.status_code == 201
    assert "idempotency-replayed" not in retried.headers


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 3, 10, 11, 3600, 2**63, -(2**70), 1e308, -0.0, 0.5])
    if kind == 3:
        return "".join(
            rng.choice(string.printable + "é\u0000\u202e😀") for _ in range(rng.randrange(12))
        )
    if kind == 4:
        return rng.choice(["ing_stripe_prod", "dest_orders_api", "plane_dev_us_east_1", ""])
    if kind == 5:
        return "x" * rng.randrange(200)
    if kind == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [
        "name",
        "cluster_id",
        "source_id",
        "destination_id",
        "config",
        "retry_policy",
        "max_attempts",
        "backoff_seconds",
        "targets",
        "draft",
        "id",
        "",
        "é",
        "__proto__",
    ]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(6))}


def _random_body(rng: random.Random) -> bytes:
    choice = rng.randrange(5)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if choice in {1, 4}:
        valid = flow_body(name=f"fuzz-{rng.randrange(10**9)}")
        if rng.random() < 0.5:
            valid[rng.choice([*valid, "config"])] = _random_json(rng)
        return json.dumps(valid).encode()
    return json.dumps(_random_json(rng)).encode()


HOSTILE_SEGMENTS = [
    "ten_acme",
    "ten_globex",
    "ten_nope",
    "..",
    ".",
    "%2e%2e",
    "%00",
    "%ff",
    "a%2Fb",
    "é",
    "ten_acme%20",
    "x" * 300,
    "flow_01JD0000000000000000000000",
    "delivery-flows",
    "' OR 1=1 --",
]


def _random_headers(rng: random.Random) -> dict[str, bytes]:
    headers: dict[str, bytes] = {}
    auth = (
        b"Bearer zen_key_dev_acme_rw"
        if rng.random() < 0.6
        else rng.choice(
            [
                b"Bearer zen_key_dev_acme_ro",
                b"Bearer \xff\xfe",
                b"Bearer a.b.c",
                b"Bearer eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
                b"",
                b"Bearer " + b"a" * 5000,
                None,
            ]
        )
    )
    if auth is not None:
        headers["Authorization"] = auth
    if rng.random() < 0.2:
        headers["X-API-Key"] = rng.choice([b"zen_key_dev_acme_rw", b"\xff", b"zen_key_"])
    headers["Content-Type"] = rng.choice(
        [b"application/json"] * 4 + [b"application/json; charset=\xff", b"text/plain", b";;;"]
    )
    for name, values in {
        "If-Match": [b'"1"', b"*", b'W/"1"', b"\xff", b'"' * 50, b", , ,"],
        "Idempotency-Key": [b"k1", b"k2", b"\xff\xfe", b"a" * 300, b""],
        "X-Request-ID": [b"req_1", b"\xff", b"a" * 500],
    }.items():
        if rng.random() < 0.4:
            headers[name] = rng.choice(values)
    return headers


async def test_hostile_inputs_never_produce_a_500(client: httpx.AsyncClient) -> None:
    rng = random.Random(20261126)
    flow_id = (await create_flow(client)).json()["id"]
    statuses: dict[int, int] = {}
    for _ in range(800):
        hostile = rng.choice(HOSTILE_SEGMENTS)
        path = rng.choice(
            [FLOWS_PATH] * 8
            + [f"{FLOWS_PATH}/{flow_id}"] * 4
            + [f"{FLOWS_PATH}/{hostile}", f"/v1/tenants/{hostile}/delivery-flows"]
            + [f"/v1/tenants/ten_acme/{hostile}", f"/v1/tenants/{hostile}/clusters/{hostile}"]
            + ["/v1/tenants/ten_acme/clusters", "/v1/tenants/ten_acme/ingesters"]
        )
        query = rng.choice(
            ["", "", "", "limit=5", "limit=%ff", "cursor=abc", "cluster_id=%00", "limit=1&limit=2"]
        )
        url = path + ("?" + query if query else "")
        method = rng.choice(["GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH", "HEAD"])
        response = await client.request(
            method,
            url,
            content=_random_body(rng) if method in {"POST", "PUT", "PATCH"} else None,
            headers=_random_headers(rng),
        )
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (method, url, response.text)
        if response.status_code >= 400 and method != "HEAD":
            read_problem(response)
    # The fuzzing reached deep into the app, not only the front door.
    assert {200, 201, 400, 401, 403, 404, 405, 415}.issubset(statuses), statuses
