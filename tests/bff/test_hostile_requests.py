"""Requests a hostile or broken client sends, beyond the path and body rules of
``test_input_safety.py``: a forged Host, oversized headers, a body that never arrives."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import respx

from bff import create_app
from bff.auth import static_authenticator
from bff.middleware import MAX_HEADER_BYTES, MAX_HEADER_FIELDS
from tests.support.gateway import ALICE, BACKCHANNEL, NO_IDP, make_settings, running_bff


@pytest.mark.parametrize("path", ["/healthz/", "/readyz/", "/metrics/"])
async def test_a_trailing_slash_is_not_found_and_never_redirected_to_the_callers_host(
    upstream: respx.MockRouter, path: str
) -> None:
    async with running_bff(httpx.MockTransport(upstream.async_handler)) as client:
        response = await client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("count", "size"),
    [
        (MAX_HEADER_FIELDS + 1, 10),
        (3, MAX_HEADER_BYTES),
    ],
)
async def test_too_many_or_too_large_headers_are_431(
    upstream: respx.MockRouter, count: int, size: int
) -> None:
    headers = [(f"x-filler-{n}", "v" * size) for n in range(count)]
    async with running_bff(httpx.MockTransport(upstream.async_handler)) as client:
        refused = await client.get("/healthz", headers=headers)
        fine = await client.get("/healthz", headers=[(f"x-ok-{n}", "v" * 100) for n in range(40)])
    assert refused.status_code == 431
    assert refused.json()["type"].endswith("/headers-too-large")
    assert fine.status_code == 200


async def test_a_client_that_hangs_up_mid_body_is_not_an_error(
    upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(
        make_settings(),
        authenticators=[static_authenticator(ALICE)],
        upstream_transport=httpx.MockTransport(upstream.async_handler),
        idp_transport=NO_IDP,
    )
    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": b"logout_token=eyJ", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": BACKCHANNEL,
        "raw_path": BACKCHANNEL.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", b"900"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    caplog.set_level(logging.INFO)
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert any("client went away" in r.getMessage() for r in caplog.records)
