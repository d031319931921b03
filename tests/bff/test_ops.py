"""Operator endpoints: liveness, readiness with the state of each dependency, metrics."""

from __future__ import annotations

import signal

import httpx
import respx

from bff.auth import static_authenticator
from tests.support.clock import FakeClock
from tests.support.gateway import ALICE, BFF, FLOWS, NO_IDP, UP_FLOWS, make_settings, running_bff
from tests.support.keys import redis_sessions
from tests.support.ports import free_port
from tests.support.provider import FakeProvider
from tests.support.signin import auth_settings


async def test_healthz_answers_without_dependencies(upstream: respx.MockRouter) -> None:
    async with running_bff(httpx.MockTransport(upstream.async_handler)) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert len(upstream.calls) == 0


async def _readyz(upstream: respx.MockRouter, provider: FakeProvider) -> httpx.Response:
    from bff import create_app

    app = create_app(
        auth_settings(),
        authenticators=[static_authenticator(ALICE)],
        upstream_transport=httpx.MockTransport(upstream.async_handler),
        idp_transport=provider.transport,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bff") as client,
    ):
        return await client.get("/readyz")


async def test_readyz_reports_each_dependency(upstream: respx.MockRouter) -> None:
    provider = FakeProvider(FakeClock())
    health = upstream.get("/healthz").respond(json={"status": "ok"})
    ready = await _readyz(upstream, provider)
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "checks": {"upstream": "ok", "identityProvider": "ok", "sessions": "ok"},
        "warnings": {},
    }
    assert "authorization" not in health.calls.last.request.headers

    health.respond(503)
    provider.discovery.respond(500)
    unready = await _readyz(upstream, provider)
    assert unready.status_code == 503
    body = unready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["upstream"] == "failing"
    assert body["checks"]["identityProvider"].startswith("failing")
    assert body["checks"]["sessions"] == "ok"


async def test_metrics_count_requests_by_route_template(upstream: respx.MockRouter) -> None:
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    async with running_bff(httpx.MockTransport(upstream.async_handler)) as client:
        await client.get(FLOWS)
        await client.get(FLOWS)
        await client.get("/api/bff/v1/tenants/ten_acme/clusters/..%2f/delivery-flows")
        metrics = (await client.get("/metrics")).text
    route = "/api/bff/v1/tenants/{tid}/clusters/{cid}/delivery-flows"
    assert f'bff_http_requests_total{{method="GET",route="{route}",status="200"}} 2.0' in metrics
    assert 'route="unmatched",status="404"' in metrics
    assert "ten_acme" not in metrics, "ids must not become label values"


async def test_the_console_is_served_only_when_enabled(upstream: respx.MockRouter) -> None:
    transport = httpx.MockTransport(upstream.async_handler)
    async with running_bff(transport) as client:
        assert (await client.get("/")).status_code == 404
    enabled = make_settings(bff={"console": True})
    async with running_bff(transport, settings=enabled) as client:
        page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_made_up_methods_do_not_become_metric_label_values(
    upstream: respx.MockRouter,
) -> None:
    # Any token is a valid HTTP method: as label values they would grow the registry without bound.
    async with running_bff(httpx.MockTransport(upstream.async_handler)) as client:
        for n in range(3):
            response = await client.request(f"PROBE{n}", FLOWS)
            assert response.status_code == 405
        metrics = (await client.get("/metrics")).text
    assert "PROBE" not in metrics
    assert 'method="other"' in metrics


async def test_hsts_only_when_served_over_https(upstream: respx.MockRouter) -> None:
    transport = httpx.MockTransport(upstream.async_handler)
    async with running_bff(transport) as client:
        assert "strict-transport-security" not in (await client.get("/healthz")).headers
    https = make_settings(bff={"public_origin": "https://dash.example.com"})
    async with running_bff(transport, settings=https) as client:
        response = await client.get("/healthz")
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


async def test_an_unreachable_session_store_is_a_503_not_a_500(
    upstream: respx.MockRouter,
) -> None:
    from bff import create_app

    port = free_port()  # nothing listens there
    settings = make_settings(sessions=redis_sessions(f"redis://127.0.0.1:{port}/0"))
    app = create_app(
        settings,
        upstream_transport=httpx.MockTransport(upstream.async_handler),
        idp_transport=NO_IDP,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BFF) as client,
    ):
        client.cookies.set("bff_session", "A" * 43)
        response = await client.get(FLOWS, headers={"X-CSRF": "1"})
    assert response.status_code == 503, response.text
    assert response.json()["type"] == "https://api.zen-mesh.io/errors/upstream-unavailable"
    assert response.headers["retry-after"] == "5"


async def test_readiness_turns_503_at_once_when_a_stop_signal_arrives(
    upstream: respx.MockRouter,
) -> None:
    from bff import create_app

    upstream.get("/healthz").respond(json={"status": "ok"})
    seen_by_server: list[int] = []

    def server_handler(signum: int, frame: object) -> None:
        seen_by_server.append(signum)

    original = signal.signal(signal.SIGTERM, server_handler)
    try:
        app = create_app(
            auth_settings(),
            authenticators=[static_authenticator(ALICE)],
            upstream_transport=httpx.MockTransport(upstream.async_handler),
            idp_transport=FakeProvider(FakeClock()).transport,
            drain_on_signals=True,
        )
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bff") as client,
        ):
            assert (await client.get("/readyz")).status_code == 200
            # What the kernel would call on SIGTERM, called directly.
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # type: ignore[operator]
            draining = await client.get("/readyz")
            served = await client.get("/healthz")
        assert draining.status_code == 503
        assert draining.json()["checks"]["shutdown"] == "draining"
        assert served.status_code == 200, "requests are still answered while draining"
        assert seen_by_server == [signal.SIGTERM], "the server's own handler still runs"
        assert signal.getsignal(signal.SIGTERM) is server_handler, "put back at shutdown"
    finally:
        signal.signal(signal.SIGTERM, original)
