"""Catalogue lists take a per-call retry policy: best-effort callers ask for one attempt."""

from __future__ import annotations

import httpx
import pytest
import respx

from upstream_client import (
    BackendClient,
    InternalServerError,
    ResponseValidationError,
    RetryConfig,
    _pages,
)

SLEEPLESS = RetryConfig(max_attempts=3, backoff_base=0, jitter=0)


async def _no_sleep(delay: float) -> None:
    return None


async def test_one_attempt_when_asked_and_the_clients_policy_otherwise() -> None:
    router = respx.MockRouter(base_url="http://up.test", assert_all_called=False)
    ingesters = router.get("/v1/tenants/ten_acme/ingesters").respond(503)
    async with BackendClient(
        "http://up.test",
        retries=SLEEPLESS,
        sleep=_no_sleep,
        transport=httpx.MockTransport(router.async_handler),
    ) as client:
        for retries, attempts in ((RetryConfig(max_attempts=1), 1), (None, 3)):
            ingesters.reset()
            try:
                await client.list_ingesters("ten_acme", token="t", retries=retries)
            except InternalServerError as exc:
                assert exc.status_code == 503
            else:
                raise AssertionError("a 503 must raise")
            assert ingesters.call_count == attempts


async def test_a_catalogue_that_never_stops_paging_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_pages, "MAX_CATALOGUE_PAGES", 5)
    pages = 0

    def endless(request: httpx.Request) -> httpx.Response:
        nonlocal pages
        pages += 1
        return httpx.Response(200, json={"clusters": [], "next_cursor": f"c{pages}"})

    async with BackendClient("http://up.test", transport=httpx.MockTransport(endless)) as client:
        with pytest.raises(ResponseValidationError, match="more than 5 pages"):
            await client.list_clusters("ten_acme", token="t")
    assert pages == 5
