"""A sign-in that fails in a browser's navigation gets a page a person can read; scripts keep
problem+json."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest
import respx

from tests.support.cookies import Browser
from tests.support.gateway import CALLBACK, LOGIN, assert_problem
from tests.support.provider import AuthorizeRequest
from tests.support.signin import Harness, running_app

NAVIGATION = {
    "Sec-Fetch-Mode": "navigate",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
}
SCRIPT = {"Sec-Fetch-Mode": "cors", "Accept": "*/*"}
PAGE_CSS = "/api/bff/v1/auth/page.css"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: dict[str, str] = {}
        self.styles: list[str] = []
        self.scripts = 0
        self.text: list[str] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a":
            self._href = attributes.get("href") or ""
        elif tag == "link" and attributes.get("rel") == "stylesheet":
            self.styles.append(attributes.get("href") or "")
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._href = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._href is not None and data.strip():
            self.links[data.strip()] = self._href


def read_page(response: httpx.Response) -> _Page:
    assert response.headers["content-type"] == "text/html; charset=utf-8", response.headers
    page = _Page()
    page.feed(response.text)
    return page


def words(page: _Page) -> str:
    return re.sub(r"\s+", " ", " ".join(page.text)).strip()


async def start(h: Harness, browser: Browser) -> str:
    response = await browser.get(LOGIN, params={"returnTo": "/flows?tab=2"}, headers=NAVIGATION)
    assert response.status_code == 302
    return AuthorizeRequest.from_location(response.headers["location"]).params["state"]


async def denied(upstream: respx.MockRouter, headers: dict[str, str]) -> httpx.Response:
    """The callback of a sign-in the user refused at the provider, asked for with ``headers``."""
    async with running_app(upstream) as h:
        browser = h.browser()
        state = await start(h, browser)
        return await browser.get(
            CALLBACK, params={"error": "access_denied", "state": state}, headers=headers
        )


async def test_pressing_deny_at_the_provider_shows_a_page_with_a_way_back(
    upstream: respx.MockRouter,
) -> None:
    response = await denied(upstream, NAVIGATION)

    assert response.status_code == 400
    page = read_page(response)
    text = words(page)
    assert text.startswith("Sign-in failed · Flows Sign-in failed")
    assert "The identity provider refused the sign-in (access_denied)." in text
    request_id = response.headers["x-request-id"]
    assert f"quote this request id: {request_id}" in text
    assert page.links == {
        "Try again": "/api/bff/v1/auth/login?returnTo=%2F",
        "Back to the dashboard": "/",
    }
    assert page.styles == [PAGE_CSS] and page.scripts == 0
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "style-src 'self'" in policy
    assert "script-src" not in policy
    assert response.headers["cache-control"] == "no-store"
    assert "www-authenticate" not in response.headers


async def test_a_script_calling_the_same_callback_keeps_problem_json(
    upstream: respx.MockRouter,
) -> None:
    assert_problem(await denied(upstream, SCRIPT), 400, "login-failed")


@pytest.mark.parametrize(
    ("headers", "page"),
    [
        ({"Accept": "text/html"}, True),  # a browser too old to send Sec-Fetch-Mode
        ({"Sec-Fetch-Mode": "navigate", "Accept": "*/*"}, True),
        ({"Sec-Fetch-Mode": "same-origin", "Accept": "text/html"}, False),
        ({"Accept": "application/json"}, False),
        ({}, False),
    ],
)
async def test_only_a_navigation_gets_a_page(
    upstream: respx.MockRouter, headers: dict[str, str], page: bool
) -> None:
    async with running_app(upstream) as h:
        response = await h.browser().get(CALLBACK, params={"code": "c"}, headers=headers)
    assert response.status_code == 400
    expected = "text/html; charset=utf-8" if page else "application/problem+json"
    assert response.headers["content-type"] == expected


async def test_an_expired_sign_in_says_so_and_offers_a_fresh_one(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        response = await h.browser().get(
            CALLBACK, params={"code": "c", "state": "s"}, headers=NAVIGATION
        )
    page = read_page(response)
    assert "This sign-in has expired or was already used; start again." in words(page)
    assert page.links["Try again"] == "/api/bff/v1/auth/login?returnTo=%2F"


async def test_a_bad_sign_in_link_offers_one_without_the_bad_option(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        response = await h.browser().get(
            LOGIN, params={"returnTo": "/flows", "prompt": "bogus"}, headers=NAVIGATION
        )
    assert response.status_code == 400
    page = read_page(response)
    assert words(page).startswith("This sign-in link is not valid")
    assert page.links["Try again"] == "/api/bff/v1/auth/login?returnTo=%2Fflows"
    assert page.links["Back to the dashboard"] == "/flows"


async def test_provider_down_says_to_wait_and_keeps_retry_after(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        h.provider.discovery.side_effect = httpx.ConnectError("provider down")
        response = await h.browser().get(LOGIN, headers=NAVIGATION)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    text = words(read_page(response))
    assert "Sign-in is unavailable right now" in text
    assert "Wait 5 seconds before you try again." in text


async def test_nothing_from_the_request_is_written_into_the_page_unescaped(
    upstream: respx.MockRouter,
) -> None:
    async with running_app(upstream) as h:
        browser = h.browser()
        state = await start(h, browser)
        response = await browser.get(
            CALLBACK,
            params={"error": "<script>alert(1)</script>", "state": state},
            headers={**NAVIGATION, "X-Request-ID": "req_<b>injected</b>"},
        )
    assert "<script" not in response.text and "<b>" not in response.text
    assert "The identity provider refused the sign-in." in words(read_page(response))


async def test_the_page_style_sheet_is_served_from_here(upstream: respx.MockRouter) -> None:
    async with running_app(upstream) as h:
        response = await h.client.get(PAGE_CSS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/css; charset=utf-8"
    assert "url(" not in response.text and "@import" not in response.text
