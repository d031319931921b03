"""The fault policy around the upstream, on the wall clock: a short outage costs a short while.

The gateway runs in-process with its default circuit breaker; the upstream answers normally but
refuses connections for one second. Every 25 ms a dashboard call is made.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import respx

from bff.auth import static_authenticator
from tests.support.gateway import ALICE, FLOWS, UP_FLOWS, in_process, make_settings, upstream_flow

OUTAGE_SECONDS = 1.0
WATCH_SECONDS = 6.0


class Outage(httpx.AsyncBaseTransport):
    """Connections are refused between ``start`` and ``end`` (monotonic); otherwise ``inner``."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.start = self.end = 0.0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.start <= time.monotonic() < self.end:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


async def test_a_one_second_outage_costs_about_a_second_of_503s_and_readiness_says_why(
    upstream: respx.MockRouter,
) -> None:
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [upstream_flow()], "next_cursor": None})
    outage = Outage(httpx.MockTransport(upstream.async_handler))
    async with in_process(
        outage, authenticators=[static_authenticator(ALICE)], settings=make_settings()
    ) as running:
        client = running.client
        assert (await client.get(FLOWS)).status_code == 200  # warm: the catalog is cached
        outage.start = time.monotonic()
        outage.end = outage.start + OUTAGE_SECONDS
        answers: list[tuple[float, int]] = []
        readiness: list[tuple[int, str]] = []
        while (now := time.monotonic()) < outage.start + WATCH_SECONDS:
            response = await client.get(FLOWS)
            answers.append((now - outage.start, response.status_code))
            if response.status_code == 503:
                assert response.json()["type"].endswith("/upstream-unavailable")
                ready = await client.get("/readyz")
                readiness.append((ready.status_code, ready.json()["checks"]["upstream"]))
            await asyncio.sleep(0.025)
        metrics = (await client.get("/metrics")).text

    failed = [at for at, status in answers if status != 200]
    assert failed, "the outage was not seen"
    assert {status for _, status in answers} == {200, 503}
    # After the outage, 503s last at most a couple of seconds (the first probe, maybe a second).
    assert max(failed) < OUTAGE_SECONDS + 2.5, answers
    assert all(status == 200 for at, status in answers if at > max(failed))
    # While the circuit was open, readiness said so, and why.
    assert any(
        status == 503 and detail.startswith("failing: circuit open") for status, detail in readiness
    ), readiness
    assert 'bff_upstream_circuit_state{state="closed"} 1.0' in metrics
    opens = next(
        line for line in metrics.splitlines() if line.startswith("bff_upstream_circuit_opens_total")
    )
    assert float(opens.split()[-1]) >= 1
