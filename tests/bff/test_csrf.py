"""CSRF on cookie-authenticated calls: the header, the Origin, the content type; no redirects.

Every refused call must be refused before anything reaches the upstream.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import respx

from tests.support.gateway import BFF, FLOWS, UP_FLOWS, assert_problem, upstream_flow
from tests.support.signin import auth_settings, running_app

FLOW = f"{FLOWS}/flow_1"
UP_FLOW = f"{UP_FLOWS}/flow_1"
WRITE = {"name": "stripe-to-app", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"}
JSON_BODY = json.dumps(WRITE)
GOOD = {"X-CSRF": "1", "Origin": BFF, "Content-Type": "application/json"}

UNSAFE = [("POST", FLOWS), ("PUT", FLOW), ("DELETE", FLOW)]

# name → (headers replacing GOOD's, body)
REFUSED: dict[str, tuple[dict[str, str | None], str | None]] = {
    "no-x-csrf": ({"X-CSRF": None}, JSON_BODY),
    "x-csrf-0": ({"X-CSRF": "0"}, JSON_BODY),
    "x-csrf-true": ({"X-CSRF": "true"}, JSON_BODY),
    "foreign-origin": ({"Origin": "https://evil.example"}, JSON_BODY),
    "lookalike-origin": ({"Origin": "http://127.0.0.1:8000.evil.example"}, JSON_BODY),
    "other-port-origin": ({"Origin": "http://127.0.0.1:8001"}, JSON_BODY),
    "origin-null": ({"Origin": "null"}, JSON_BODY),
    "no-origin-cross-site": ({"Origin": None, "Sec-Fetch-Site": "cross-site"}, JSON_BODY),
    "no-origin-same-site": ({"Origin": None, "Sec-Fetch-Site": "same-site"}, JSON_BODY),
    "no-origin-no-fetch-metadata": ({"Origin": None}, JSON_BODY),
    # Fetch Metadata is a second line: a browser that says cross-site is refused, Origin or not.
    "allowed-origin-but-cross-site": ({"Sec-Fetch-Site": "cross-site"}, JSON_BODY),
    "form-urlencoded": (
        {"Content-Type": "application/x-www-form-urlencoded"},
        "name=x&sourceId=ing_stripe_prod&destinationId=dest_orders_api",
    ),
    "multipart": (
        {"Content-Type": "multipart/form-data; boundary=b"},
        '--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--b--\r\n',
    ),
    "text-plain": ({"Content-Type": "text/plain"}, JSON_BODY),
    "text-plain-json-body-without-type": ({"Content-Type": None}, JSON_BODY),
}


def headers_for(changes: dict[str, str | None]) -> dict[str, str]:
    merged: dict[str, str | None] = {**GOOD, **changes}
    return {k: v for k, v in merged.items() if v is not None}


@pytest.fixture
def backend(upstream: respx.MockRouter) -> respx.MockRouter:
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow(), headers={"ETag": '"1"'})
    upstream.get(UP_FLOW).respond(json=upstream_flow(), headers={"ETag": '"1"'})
    upstream.put(UP_FLOW).respond(json=upstream_flow(version=2), headers={"ETag": '"2"'})
    upstream.delete(UP_FLOW).respond(204)
    return upstream


@pytest.mark.parametrize(("method", "path"), UNSAFE, ids=[m for m, _ in UNSAFE])
@pytest.mark.parametrize("case", list(REFUSED))
async def test_unsafe_calls_that_fail_the_csrf_checks_are_refused_before_the_upstream(
    backend: respx.MockRouter, method: str, path: str, case: str
) -> None:
    changes, body = REFUSED[case]
    async with running_app(backend) as h:
        browser = h.browser_with(await h.insert_session("alice"))
        response = await browser.request(method, path, headers=headers_for(changes), content=body)
    assert_problem(response, 403, "csrf-check-failed")
    assert len(backend.calls) == 0


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", FLOWS, 201), ("PUT", FLOW, 200), ("DELETE", FLOW, 204)],
    ids=["POST", "PUT", "DELETE"],
)
@pytest.mark.parametrize(
    "changes",
    [{}, {"Origin": None, "Sec-Fetch-Site": "same-origin"}],
    ids=["own-origin", "no-origin-same-origin-fetch"],
)
async def test_unsafe_calls_from_the_dashboard_pass(
    backend: respx.MockRouter, method: str, path: str, status: int, changes: dict[str, Any]
) -> None:
    async with running_app(backend) as h:
        browser = h.browser_with(await h.insert_session("alice"))
        body = None if method == "DELETE" else JSON_BODY
        response = await browser.request(method, path, headers=headers_for(changes), content=body)
    assert response.status_code == status, response.text


async def test_an_allowed_extra_origin_may_make_changes(backend: respx.MockRouter) -> None:
    settings = auth_settings(bff={"allowed_origins": ["https://console.example"]})
    async with running_app(backend, settings=settings) as h:
        browser = h.browser_with(await h.insert_session("alice"))
        response = await browser.request(
            "POST",
            FLOWS,
            headers=headers_for({"Origin": "https://console.example"}),
            content=JSON_BODY,
        )
    assert response.status_code == 201, response.text


async def test_reads_need_the_header_but_no_origin(backend: respx.MockRouter) -> None:
    async with running_app(backend) as h:
        browser = h.browser_with(await h.insert_session("alice"))
        allowed = await browser.request("GET", FLOWS, headers={"X-CSRF": "1"})
        calls_after_allowed = len(backend.calls)
        refused = await browser.request("GET", FLOWS)
        wrong_value = await browser.request("GET", FLOW, headers={"X-CSRF": "yes"})
    assert allowed.status_code == 200, allowed.text
    assert_problem(refused, 403, "csrf-check-failed")
    assert_problem(wrong_value, 403, "csrf-check-failed")
    assert len(backend.calls) == calls_after_allowed


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", FLOWS), ("GET", FLOW), *UNSAFE],
    ids=["list", "get", "POST", "PUT", "DELETE"],
)
async def test_api_calls_without_a_session_get_a_401_problem_never_a_redirect(
    backend: respx.MockRouter, method: str, path: str
) -> None:
    async with running_app(backend) as h:
        response = await h.browser().request(
            method,
            path,
            headers={**GOOD, "Accept": "text/html,application/xhtml+xml"},
            content=None if method in {"GET", "DELETE"} else JSON_BODY,
        )
    assert_problem(response, 401, "authentication-required")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert len(backend.calls) == 0
