"""``BackendClient.ping``: the readiness probe of the upstream."""

from __future__ import annotations

import httpx
import pytest
import respx

from upstream_client import APIConnectionError, BackendClient


async def test_ping_reports_health_without_credentials() -> None:
    router = respx.MockRouter(base_url="http://up.test", assert_all_called=False)
    route = router.get("/healthz").respond(json={"status": "ok"})
    async with BackendClient(
        "http://up.test", transport=httpx.MockTransport(router.async_handler)
    ) as client:
        assert await client.ping() is True
        route.respond(503)
        assert await client.ping() is False
    assert "authorization" not in route.calls.last.request.headers


async def test_ping_raises_when_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with BackendClient("http://up.test", transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(APIConnectionError):
            await client.ping()
