from __future__ import annotations

import json
from importlib import resources

import httpx
from starlette.routing import Route

import sandbox
from tests.support.sandbox_app import dev_settings

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _document() -> dict:
    return json.loads(resources.files("sandbox").joinpath("openapi.json").read_bytes())


def test_every_route_is_documented_and_every_documented_operation_is_served() -> None:
    app = sandbox.create_app(dev_settings())
    try:
        served = {
            (route.path, method.lower())
            for route in app.routes
            if isinstance(route, Route)
            for method in (route.methods or set())
            if method != "HEAD"
        }
    finally:
        app.state.store.close()
    documented = {
        (path, method)
        for path, item in _document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert served == documented
    assert len(served) == 10


def test_the_document_is_openapi_3_1_and_its_references_resolve() -> None:
    document = _document()
    assert document["openapi"].startswith("3.1.")

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                target: object = document
                for part in ref.removeprefix("#/").split("/"):
                    assert isinstance(target, dict) and part in target, ref
                    target = target[part]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)


def test_every_operation_has_a_unique_id_and_documents_its_errors() -> None:
    operation_ids = []
    for path, item in _document()["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            operation_ids.append(operation["operationId"])
            if path.startswith("/v1/tenants/"):
                assert {"400", "401", "403", "500"} <= set(operation["responses"]), (path, method)
    assert len(operation_ids) == len(set(operation_ids))


async def test_the_document_is_served_without_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.json() == _document()
