"""The identity provider stops answering: every wait for it is bounded, and sign-in says so fast.

The provider here is a real listener on loopback that accepts connections and never answers, so
the gateway's own timeouts are what end each wait. (That bearer tokens keep being checked against
the keys fetched earlier while the provider hangs is in ``test_jwt_validation.py``.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
import respx
from joserfc.jwk import RSAKey

from bff import create_app
from tests.support.gateway import BFF, FLOWS, make_settings
from tests.support.provider import CLIENT_ID
from tests.support.silent import silent_listener
from tests.support.tokens import sign

TIMEOUT = 0.5


@pytest.fixture
async def gateway(upstream: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    with silent_listener() as port:
        issuer = f"http://127.0.0.1:{port}"
        settings = make_settings(
            oidc={
                "issuer": issuer,
                "client_id": CLIENT_ID,
                "timeout_seconds": TIMEOUT,
                "bearer_audience": "https://flows.example/api",
            }
        )
        app = create_app(settings, upstream_transport=httpx.MockTransport(upstream.async_handler))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BFF) as client,
        ):
            yield client


async def _timed(call: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call  # type: ignore[misc]
    return response, time.monotonic() - started


async def test_sign_in_answers_503_within_the_timeout_then_at_once(
    gateway: httpx.AsyncClient,
) -> None:
    first, waited = await _timed(gateway.get("/api/bff/v1/auth/login"))
    again, waited_again = await _timed(gateway.get("/api/bff/v1/auth/login"))
    for answer in (first, again):
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"]
    assert waited < TIMEOUT * 2 + 0.5, waited
    assert waited_again < 0.2, "a provider that just failed is not waited for again at once"


async def test_a_bearer_call_waits_for_the_provider_at_most_the_timeout(
    gateway: httpx.AsyncClient,
) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    token = sign(
        {"iss": "x", "sub": "alice", "aud": "https://flows.example/api", "exp": time.time() + 60},
        key,
    )
    answer, waited = await _timed(gateway.get(FLOWS, headers={"Authorization": f"Bearer {token}"}))
    assert answer.status_code == 503, answer.text
    assert waited < TIMEOUT * 2 + 0.5, waited
    ready, waited = await _timed(gateway.get("/readyz"))
    assert ready.status_code == 503
    assert ready.json()["checks"]["identityProvider"].startswith("failing")
    assert waited < 0.5
