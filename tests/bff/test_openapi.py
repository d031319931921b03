"""The hand-written OpenAPI document matches what the app serves: every route, every response."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from jsonschema import Draft202012Validator
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from bff import Principal, create_app
from bff.auth import static_authenticator
from bff.paths import API_PREFIX
from bff.settings import Settings
from tests.support.gateway import (
    ALICE,
    API,
    BOB,
    FLOWS,
    NO_IDP,
    UP_FLOWS,
    Running,
    in_process,
    make_settings,
    upstream_flow,
)
from tests.support.openapi import DOCUMENT, assert_conforms, resolve
from tests.support.signin import running_app

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
NO_RETRIES = make_settings(upstream={"max_attempts": 1})
BODY = {"name": "stripe-to-app", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"}
FLOW_PATH = "/tenants/{tid}/clusters/{cid}/delivery-flows/{fid}"
LIST_PATH = "/tenants/{tid}/clusters/{cid}/delivery-flows"


# --- routes and paths ---------------------------------------------------------------------------


def served_operations(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, method) of every route, descending into mounts; HEAD comes with GET."""
    for route in routes:
        if isinstance(route, Mount):
            yield from served_operations(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    yield prefix + route.path, method.lower()


def documented_operations() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def build_app(
    upstream: respx.MockRouter,
    principal: Principal | None = ALICE,
    settings: Settings | None = None,
) -> Starlette:
    return create_app(
        settings or NO_RETRIES,
        authenticators=[static_authenticator(principal)] if principal else [],
        upstream_transport=httpx.MockTransport(upstream.async_handler),
        idp_transport=NO_IDP,
    )


def test_every_served_route_is_documented_and_every_documented_path_served(
    upstream: respx.MockRouter,
) -> None:
    app = build_app(upstream)
    served = {
        (path.removeprefix(API_PREFIX), method)
        for path, method in served_operations(app.routes)
        if path.startswith(API_PREFIX + "/")
    }
    assert ("/tenants/{tid}/clusters/{cid}/delivery-flows/{fid}", "put") in served
    assert served == documented_operations()


def test_the_served_routes_walk_finds_mounted_routes() -> None:
    inner = Mount("/v1", routes=[Route("/x/{id}", lambda r: None, methods=["GET", "POST"])])
    assert set(served_operations([Mount("/api", routes=[inner])])) == {
        ("/api/v1/x/{id}", "get"),
        ("/api/v1/x/{id}", "post"),
    }


# --- the document itself ------------------------------------------------------------------------


def all_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from all_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_refs(value)


def test_document_is_openapi_3_1_shaped() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    assert DOCUMENT["info"]["title"] and DOCUMENT["info"]["version"]
    assert DOCUMENT["servers"] == [{"url": API}]
    for ref in all_refs(DOCUMENT):
        assert resolve({"$ref": ref}) is not None
    for schema in DOCUMENT["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    operation_ids: list[str] = []
    for path, item in DOCUMENT["paths"].items():
        assert path.startswith("/")
        templated = set(re.findall(r"{(\w+)}", path))
        path_level = [resolve(p) for p in item.get("parameters", [])]
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            operation_ids.append(operation["operationId"])
            parameters = path_level + [resolve(p) for p in operation.get("parameters", [])]
            declared = {p["name"] for p in parameters if p["in"] == "path"}
            assert declared == templated, (path, method)
            assert all(p["required"] for p in parameters if p["in"] == "path")
            responses = operation["responses"]
            assert any(code.startswith(("2", "3")) for code in responses), (path, method)
            for code, response in responses.items():
                assert re.fullmatch(r"[1-5]\d\d|default", code), (path, method, code)
                response = resolve(response)
                assert response["description"]
                for media in response.get("content", {}).values():
                    Draft202012Validator.check_schema(resolve(media["schema"]))
    assert len(operation_ids) == len(set(operation_ids))


async def test_document_is_served(upstream: respx.MockRouter) -> None:
    async with running(upstream, principal=None) as bff:
        response = await bff.client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == DOCUMENT
    assert_conforms("/openapi.json", "get", response)


# --- responses conform --------------------------------------------------------------------------


def running(
    upstream: respx.MockRouter,
    principal: Principal | None = ALICE,
    settings: Settings | None = None,
) -> AbstractAsyncContextManager[Running]:
    return in_process(
        httpx.MockTransport(upstream.async_handler),
        authenticators=[static_authenticator(principal)] if principal else [],
        settings=settings or NO_RETRIES,
    )


def upstream_problem(status: int, **extra: Any) -> httpx.Response:
    return httpx.Response(
        status,
        json={"type": "about:blank", "title": "x", "status": status, "detail": "x", **extra},
        headers={"Content-Type": "application/problem+json", "Retry-After": "3"},
    )


async def test_success_responses_conform(upstream: respx.MockRouter) -> None:
    upstream.get(UP_FLOWS).respond(
        json={"delivery_flows": [upstream_flow(), upstream_flow("flow_2")], "next_cursor": "n1"}
    )
    upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow(), headers={"ETag": '"1"'})
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow("flow_3"), headers={"ETag": '"1"'})
    upstream.put(f"{UP_FLOWS}/flow_1").respond(
        json=upstream_flow(version=2), headers={"ETag": '"2"'}
    )
    upstream.delete(f"{UP_FLOWS}/flow_1").respond(204)
    async with running(upstream) as bff:
        client = bff.client
        listed = await client.get(FLOWS, params={"limit": "2"})
        checks = [
            (LIST_PATH, "get", listed),
            (
                LIST_PATH,
                "get",
                await client.get(
                    FLOWS, params={"limit": "2"}, headers={"If-None-Match": listed.headers["etag"]}
                ),
            ),
            (FLOW_PATH, "get", await client.get(f"{FLOWS}/flow_1")),
            (
                FLOW_PATH,
                "get",
                await client.get(f"{FLOWS}/flow_1", headers={"If-None-Match": '"1"'}),
            ),
            (LIST_PATH, "post", await client.post(FLOWS, json=BODY)),
            (FLOW_PATH, "put", await client.put(f"{FLOWS}/flow_1", json=BODY)),
            (FLOW_PATH, "delete", await client.delete(f"{FLOWS}/flow_1")),
            (
                "/tenants/{tid}/clusters",
                "get",
                await client.get(f"{API}/tenants/ten_acme/clusters"),
            ),
            (
                "/tenants/{tid}/clusters/{cid}/delivery-flow-options",
                "get",
                await client.get(
                    f"{API}/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flow-options"
                ),
            ),
        ]
    assert [r.status_code for _, _, r in checks] == [200, 304, 200, 304, 201, 200, 204, 200, 200]
    for path, method, response in checks:
        assert_conforms(path, method, response)


async def test_flows_without_names_conform(upstream: respx.MockRouter) -> None:
    upstream.routes["ingesters"].mock(return_value=httpx.Response(500))
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [upstream_flow()], "next_cursor": None})
    async with running(upstream) as bff:
        response = await bff.client.get(FLOWS)
    assert response.json()["items"][0]["source"]["name"] is None
    assert_conforms(LIST_PATH, "get", response)


async def test_client_error_problems_conform(upstream: respx.MockRouter) -> None:
    async with running(upstream) as bff:
        client = bff.client
        checks = [
            (LIST_PATH, "get", await client.get(FLOWS, params={"limit": "0"}), 400),
            (
                LIST_PATH,
                "get",
                await client.get(f"{API}/tenants/ten_acme/clusters/plane_nope/delivery-flows"),
                404,
            ),
            (FLOW_PATH, "get", await client.get(f"{FLOWS}/flow..1"), 404),
            (LIST_PATH, "post", await client.post(FLOWS, json={"name": ""}), 400),
            (LIST_PATH, "post", await client.post(FLOWS, content=b"x", headers={}), 415),
            (
                LIST_PATH,
                "post",
                await client.post(
                    FLOWS,
                    content=b"{" + b" " * 70_000 + b"}",
                    headers={"Content-Type": "application/json"},
                ),
                413,
            ),
            (
                FLOW_PATH,
                "put",
                await client.put(f"{FLOWS}/flow_1", json=BODY, headers={"If-Match": "nope"}),
                400,
            ),
            (
                "/tenants/{tid}/clusters",
                "get",
                await client.get(f"{API}/tenants/ten_globex/clusters"),
                403,
            ),
        ]
    async with running(upstream, principal=BOB) as bff:
        checks.append((LIST_PATH, "post", await bff.client.post(FLOWS, json=BODY), 403))
    async with running(upstream, principal=None) as bff:
        checks.append((FLOW_PATH, "delete", await bff.client.delete(f"{FLOWS}/flow_1"), 401))
    assert [r.status_code for _, _, r, _ in checks] == [s for _, _, _, s in checks]
    for path, method, response, _ in checks:
        assert_conforms(path, method, response)


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (upstream_problem(409), 409),
        (upstream_problem(412), 412),
        (upstream_problem(422), 422),
        (upstream_problem(429), 429),
        (upstream_problem(500), 502),
        (upstream_problem(503), 503),
        (upstream_problem(504), 504),
        (upstream_problem(400, errors=[{"field": "source_id", "message": "nope"}]), 400),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else "",
)
async def test_upstream_problems_conform(
    upstream: respx.MockRouter, answer: httpx.Response, status: int
) -> None:
    upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow())
    upstream.put(f"{UP_FLOWS}/flow_1").mock(return_value=answer)
    async with running(upstream) as bff:
        response = await bff.client.put(f"{FLOWS}/flow_1", json=BODY)
    assert response.status_code == status
    assert_conforms(FLOW_PATH, "put", response)


async def test_sign_in_routes_conform(upstream: respx.MockRouter) -> None:
    async with running(upstream, principal=None) as bff:
        client = bff.client
        checks = [
            ("/auth/session", "get", await client.get(f"{API}/auth/session"), 401),
            ("/auth/logout", "post", await client.post(f"{API}/auth/logout"), 200),
            ("/auth/login", "get", await client.get(f"{API}/auth/login"), 503),
            ("/auth/login", "get", await client.get(f"{API}/auth/login?next=/"), 400),
            ("/auth/callback", "get", await client.get(f"{API}/auth/callback?code=c&state=s"), 400),
            (
                "/auth/backchannel-logout",
                "post",
                await client.post(f"{API}/auth/backchannel-logout", json={"logout_token": "x"}),
                400,
            ),
            (
                "/.well-known/jwks.json",
                "get",
                await client.get(f"{API}/.well-known/jwks.json"),
                200,
            ),
        ]
    assert [r.status_code for _, _, r, _ in checks] == [s for _, _, _, s in checks]
    for path, method, response, _ in checks:
        assert_conforms(path, method, response)


async def test_session_routes_of_a_signed_in_user_conform(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        browser, other = h.browser(), h.browser()
        await h.login(browser, "alice")
        await h.login(other, "alice")
        sessions = f"{API}/auth/sessions"
        one = "/auth/sessions/{sessionId}"
        whoami = await browser.api("GET", f"{API}/auth/session")
        listed = await browser.api("GET", sessions)
        others = [s["id"] for s in listed.json()["sessions"] if not s["current"]]
        checks = [
            ("/auth/session", "get", whoami, 200),
            ("/auth/sessions", "get", listed, 200),
            (one, "delete", await browser.api("DELETE", f"{sessions}/x"), 404),
            (one, "delete", await browser.api("DELETE", f"{sessions}/{others[0]}"), 204),
            ("/auth/sessions", "delete", await browser.api("DELETE", sessions), 200),
            ("/auth/sessions", "get", await browser.api("GET", sessions), 401),
        ]  # fmt: skip
    assert [r.status_code for _, _, r, _ in checks] == [s for _, _, _, s in checks]
    for path, method, response, _ in checks:
        assert_conforms(path, method, response)


async def test_who_am_i_while_the_provider_is_down_conforms(upstream: respx.MockRouter) -> None:
    # The access token has run out and cannot be refreshed: the same 503 as the flow routes.
    async with running_app(upstream) as h:
        h.provider.expires_in = 300
        browser = h.browser()
        await h.login(browser, "alice")
        h.clock.advance(400)
        h.provider.refresh_mode = "down"
        response = await browser.api("GET", f"{API}/auth/session")
    assert response.status_code == 503, response.text
    assert_conforms("/auth/session", "get", response)


async def test_conformance_check_catches_a_wrong_body(upstream: respx.MockRouter) -> None:
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [upstream_flow()], "next_cursor": None})
    async with running(upstream) as bff:
        response = await bff.client.get(FLOWS)
    body = response.json()
    body["items"][0]["retryPolicy"]["maxAttempts"] = "3"
    body["page"]["extra"] = True
    tampered = httpx.Response(200, json=body)
    with pytest.raises(AssertionError, match="maxAttempts"):
        assert_conforms(LIST_PATH, "get", tampered)
    with pytest.raises(AssertionError, match="does not document 418"):
        assert_conforms(LIST_PATH, "get", httpx.Response(418, json={}))


REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("document", "parameters"),
    [
        ("bff/openapi.json", ["IfMatch"]),
        ("sandbox/openapi.json", ["Cursor"]),
    ],
)
def test_the_documents_refuse_the_empty_values_the_services_refuse(
    document: str, parameters: list[str]
) -> None:
    # Both services answer 400 to an empty cursor and the gateway to an empty If-Match; a
    # document that allowed them would promise what the service refuses.
    doc = json.loads((REPO_ROOT / document).read_text())
    for name in parameters:
        schema = doc["components"]["parameters"][name]["schema"]
        assert not Draft202012Validator(schema).is_valid(""), name


def test_the_gateways_cursor_parameters_refuse_an_empty_value() -> None:
    doc = json.loads((REPO_ROOT / "bff" / "openapi.json").read_text())
    cursors = [
        parameter["schema"]
        for operations in doc["paths"].values()
        for operation in operations.values()
        if isinstance(operation, dict)
        for parameter in operation.get("parameters", [])
        if isinstance(parameter, dict) and parameter.get("name") == "cursor"
    ]
    assert cursors
    assert all(not Draft202012Validator(schema).is_valid("") for schema in cursors)
