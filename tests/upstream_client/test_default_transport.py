"""The default (aiohttp-backed) transport against a real HTTP server on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.support.ports import free_port
from tests.upstream_client.conftest import TENANT, flow_json, serving_on_loopback
from upstream_client import (
    APIConnectionError,
    APIStatusError,
    BackendClient,
    Limits,
    ResponseTooLargeError,
    RetryConfig,
)

ONE_ATTEMPT = RetryConfig(max_attempts=1)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def flow(request: web.Request) -> web.Response:
        seen.append(request)
        response = web.json_response(flow_json(request.match_info["fid"]))
        response.set_cookie("session", f"secret-of-{request.headers['Authorization']}")
        return response

    async def moved(request: web.Request) -> web.Response:
        seen.append(request)
        raise web.HTTPFound("/v1/tenants/ten_acme/delivery-flows/flow_1")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b" " * 200_000, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/moved", moved)
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/big", big)
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/{fid}", flow)
    async with serving_on_loopback(app) as port:
        yield f"http://127.0.0.1:{port}", seen


async def test_cookies_never_travel_between_calls(server: tuple[str, list[web.Request]]) -> None:
    base_url, seen = server
    # A host name, not an IP: cookie jars refuse to store cookies of bare IP hosts.
    async with BackendClient(base_url.replace("127.0.0.1", "localhost")) as client:
        await client.get_flow(TENANT, "flow_1", token="alice")
        await client.get_flow(TENANT, "flow_2", token="bob")
    assert [r.headers["Authorization"] for r in seen] == ["Bearer alice", "Bearer bob"]
    assert all("Cookie" not in r.headers for r in seen)


async def test_redirects_are_not_followed(server: tuple[str, list[web.Request]]) -> None:
    base_url, seen = server
    async with BackendClient(base_url, retries=ONE_ATTEMPT) as client:
        with pytest.raises(APIStatusError) as caught:
            await client.get_flow(TENANT, "moved", token="t")
    assert caught.value.status_code == 302
    assert len(seen) == 1


async def test_proxy_environment_is_ignored(
    server: tuple[str, list[web.Request]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, seen = server
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with BackendClient(base_url, retries=ONE_ATTEMPT) as client:
        flow = await client.get_flow(TENANT, "flow_1", token="t")
    assert flow.id == "flow_1"
    assert len(seen) == 1


async def test_body_size_cap_applies(server: tuple[str, list[web.Request]]) -> None:
    base_url, _ = server
    async with BackendClient(base_url, limits=Limits(max_response_bytes=100_000)) as client:
        with pytest.raises(ResponseTooLargeError):
            await client.get_flow(TENANT, "big", token="t")


async def test_refused_connection_is_a_connection_error() -> None:
    port = free_port()  # nothing listens there
    async with BackendClient(f"http://127.0.0.1:{port}", retries=ONE_ATTEMPT) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.get_flow(TENANT, "flow_1", token="t")
    assert type(caught.value) is APIConnectionError


async def test_keeps_working_across_many_calls(server: tuple[str, list[web.Request]]) -> None:
    base_url, seen = server
    async with BackendClient(base_url) as client:
        flows = [await client.get_flow(TENANT, f"flow_{i}", token="t") for i in range(20)]
    assert [f.id for f in flows] == [f"flow_{i}" for i in range(20)]
    assert len(seen) == 20
