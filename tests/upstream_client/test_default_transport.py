"""The default (aiohttp-backed) transport against a real HTTP server on a loopback port."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, MutableMapping

import httpx
import pytest
from aiohttp import web

from tests.support.backend import TENANT, flow_json, serving_on_loopback
from tests.support.ports import free_port
from upstream_client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BackendClient,
    Limits,
    RateLimitError,
    ResponseTooLargeError,
    RetryConfig,
    Timeout,
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

    async def chunked_big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(50):
            await response.write(b" " * 10_000)
        return response

    async def gzipped(request: web.Request) -> web.Response:
        # Compressed although the client asked for identity.
        body = gzip.compress(json.dumps(flow_json("flow_gz")).encode())
        return web.Response(
            body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    async def bomb(request: web.Request) -> web.Response:
        body = gzip.compress(b" " * 5_000_000)
        return web.Response(
            body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response(flow_json("flow_slow"))

    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b'{"id": "flow_')
        assert request.transport is not None
        request.transport.close()
        return response

    async def limited(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response(
            {"type": "about:blank", "title": "Too Many Requests", "status": 429},
            status=429,
            headers={"Retry-After": "7", "X-Request-ID": "req_upstream_1"},
        )

    async def flaky(request: web.Request) -> web.Response:
        seen.append(request)
        if len([r for r in seen if r.path.endswith("/flaky")]) == 1:
            return web.Response(status=503)
        return web.json_response(flow_json("flaky"))

    app = web.Application()
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/flaky", flaky)
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/moved", moved)
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/big", big)
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/chunked_big", chunked_big)
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/gzipped", gzipped)
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/bomb", bomb)
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/slow", slow)
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/cut", cut)
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/limited", limited)
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
        # Without a Content-Length only counting what arrives can stop it.
        with pytest.raises(ResponseTooLargeError):
            await client.get_flow(TENANT, "chunked_big", token="t")


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


async def test_an_encoded_answer_is_decoded_and_its_decoded_size_capped(
    server: tuple[str, list[web.Request]],
) -> None:
    base_url, _ = server
    async with BackendClient(base_url, limits=Limits(max_response_bytes=100_000)) as client:
        assert (await client.get_flow(TENANT, "gzipped", token="t")).id == "flow_gz"
        with pytest.raises(ResponseTooLargeError):
            await client.get_flow(TENANT, "bomb", token="t")


async def test_a_silent_upstream_is_a_timeout_and_a_cut_answer_a_connection_error(
    server: tuple[str, list[web.Request]],
) -> None:
    base_url, _ = server
    quick = Timeout(connect=1.0, read=0.2, write=1.0, pool=1.0, total=2.0)
    async with BackendClient(base_url, timeout=quick, retries=ONE_ATTEMPT) as client:
        with pytest.raises(APITimeoutError):
            await client.get_flow(TENANT, "slow", token="t")
        with pytest.raises(APIConnectionError) as caught:
            await client.get_flow(TENANT, "cut", token="t")
    assert type(caught.value) is APIConnectionError


async def test_a_status_error_carries_the_answers_headers(
    server: tuple[str, list[web.Request]],
) -> None:
    base_url, _ = server
    async with BackendClient(base_url, retries=ONE_ATTEMPT) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.get_flow(TENANT, "limited", token="t")
    assert caught.value.retry_after == 7
    assert caught.value.request_id == "req_upstream_1"
    assert isinstance(caught.value.headers, httpx.Headers)
    assert caught.value.headers["retry-after"] == "7"


class _Tracing:
    """Adds a header per attempt and remembers what each attempt was told."""

    def __init__(self) -> None:
        self.ended: list[int | None] = []

    def attempt_started(
        self, method: str, url: httpx.URL, headers: MutableMapping[str, str], attempt: int
    ) -> object:
        headers["traceparent"] = f"00-{'1' * 32}-{attempt:016x}-01"
        return attempt

    def attempt_ended(self, started: object, status: int | None) -> None:
        self.ended.append(status)


async def test_each_attempt_carries_the_headers_its_observer_added(
    server: tuple[str, list[web.Request]],
) -> None:
    base_url, seen = server
    observer = _Tracing()
    retries = RetryConfig(max_attempts=2, backoff_base=0.01)
    async with BackendClient(base_url, retries=retries, observer=observer) as client:
        assert (await client.get_flow(TENANT, "flaky", token="t")).id == "flaky"
    assert [r.headers["traceparent"] for r in seen] == [
        f"00-{'1' * 32}-{1:016x}-01",
        f"00-{'1' * 32}-{2:016x}-01",
    ]
    assert observer.ended == [503, 200]
