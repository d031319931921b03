"""Every upstream failure becomes the BFF's own problem+json, and nothing of the upstream leaks."""

from __future__ import annotations

import json
import logging
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

import bff.flows
from bff.settings import Settings
from tests.support.gateway import FLOWS, UP_FLOWS, make_settings, running_bff, upstream_flow

ERRORS = "https://api.zen-mesh.io/errors/"
FLOW_URL = f"{FLOWS}/flow_1"
UP_FLOW = f"{UP_FLOWS}/flow_1"
BODY = {"name": "stripe-to-app", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"}
NO_RETRIES = make_settings(upstream={"max_attempts": 1})

UPSTREAM_REQUEST_ID = "req_upstream_4f2a9c"
UPSTREAM_TYPE = "https://backend.internal/problems/"
# What a careless backend might put in a problem; none of it may reach the browser.
SECRETS = (
    UPSTREAM_REQUEST_ID,
    "backend.internal",
    "Traceback",
    "/srv/backend",
    "sqlite3",
    "zen_key_",
    # The credential phrase; a bare "Bearer" is legitimate in a 401's WWW-Authenticate.
    "Bearer zen_key",
    "eyJhbGciOi",
)


def bff_client(
    router: respx.MockRouter, settings: Settings = NO_RETRIES
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return running_bff(httpx.MockTransport(router.async_handler), settings=settings)


def upstream_problem(
    status: int, slug: str, detail: str | None = None, **extra: Any
) -> httpx.Response:
    extra_headers = extra.pop("headers", {})
    body: dict[str, Any] = {
        "type": UPSTREAM_TYPE + slug,
        "title": slug.replace("-", " ").title(),
        "status": status,
        "instance": UPSTREAM_REQUEST_ID,
        **extra,
    }
    if detail is not None:
        body["detail"] = detail
    headers = {
        "Content-Type": "application/problem+json",
        "X-Request-ID": UPSTREAM_REQUEST_ID,
        "Server": "backend/1.2 (sqlite3)",
        "Set-Cookie": "backend_session=zen_key_leak",
        **extra_headers,
    }
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)


INTERNALS = (
    "Traceback (most recent call last): File /srv/backend/store.py, line 42: "
    "sqlite3.OperationalError while serving Bearer zen_key_dev_acme_rw eyJhbGciOiJFUzI1NiJ9"
)


def assert_clean_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    for secret in SECRETS:
        assert secret not in response.text, secret
        assert all(secret not in value for value in response.headers.values()), secret
    assert "set-cookie" not in response.headers
    problem: dict[str, Any] = response.json()
    assert problem["type"] == ERRORS + slug
    assert problem["status"] == status
    assert problem["detail"]
    request_id = response.headers["x-request-id"]
    assert request_id.startswith("req_")
    assert problem["instance"] == request_id
    return problem


# --- status by status ---------------------------------------------------------------------------


async def test_upstream_400_field_errors_are_camelcased(upstream: respx.MockRouter) -> None:
    upstream.post(UP_FLOWS).mock(
        return_value=upstream_problem(
            400,
            "validation-error",
            "source_id: endpoint not found",
            errors=[
                {"field": "source_id", "message": "endpoint not found", "code": "not_found"},
                {
                    "field": "config.retry_policy.max_attempts",
                    "message": "max_attempts must be at most 10",
                    "code": "out_of_range",
                },
                {"field": "config.retry_policy", "message": "invalid retry_policy"},
                {
                    "field": "destination_id",
                    "message": "target not found in cluster plane_dev_us_east_1",
                },
            ],
        )
    )
    async with bff_client(upstream) as client:
        response = await client.post(FLOWS, json=BODY)
    problem = assert_clean_problem(response, 400, "validation-error")
    assert problem["detail"] == "sourceId: endpoint not found"
    assert problem["errors"] == [
        {"field": "sourceId", "message": "endpoint not found", "code": "not_found"},
        {
            "field": "retryPolicy.maxAttempts",
            "message": "maxAttempts must be at most 10",
            "code": "out_of_range",
        },
        {"field": "retryPolicy", "message": "invalid retryPolicy"},
        # Ids are snake_case too; only field names are rewritten.
        {"field": "destinationId", "message": "target not found in cluster plane_dev_us_east_1"},
    ]


CASES: list[tuple[str, httpx.Response | type[Exception], int, str]] = [
    (
        # The caller's token was relayed (these tests' credential mode) after the gateway
        # checked or renewed it: the backend and the gateway disagree, signing in cannot help.
        "401-relayed",
        upstream_problem(401, "unauthorized", "token expired: " + INTERNALS),
        502,
        "bad-gateway",
    ),
    (
        "403-scope",
        upstream_problem(403, "forbidden", INTERNALS, required_scope="read:delivery-flows"),
        403,
        "insufficient-scope",
    ),
    ("403-tenant", upstream_problem(403, "forbidden", INTERNALS), 403, "tenant-forbidden"),
    ("404", upstream_problem(404, "not-found", INTERNALS), 404, "not-found"),
    ("412", upstream_problem(412, "precondition-failed", INTERNALS), 412, "precondition-failed"),
    ("500", upstream_problem(500, "internal-error", INTERNALS), 502, "bad-gateway"),
    ("502", upstream_problem(502, "bad-gateway", INTERNALS), 502, "bad-gateway"),
    ("500-html", httpx.Response(500, text=f"<pre>{INTERNALS}</pre>"), 502, "bad-gateway"),
    ("418", upstream_problem(418, "teapot", INTERNALS), 502, "bad-gateway"),
    ("504", upstream_problem(504, "gateway-timeout", INTERNALS), 504, "upstream-timeout"),
    ("timeout", httpx.ReadTimeout, 504, "upstream-timeout"),
    ("connect-timeout", httpx.ConnectTimeout, 504, "upstream-timeout"),
    ("refused", httpx.ConnectError, 503, "upstream-unavailable"),
    ("reset", httpx.RemoteProtocolError, 503, "upstream-unavailable"),
    ("malformed-2xx", httpx.Response(200, json={"id": 5, "secret": INTERNALS}), 502, "bad-gateway"),
    ("not-json-2xx", httpx.Response(200, text=INTERNALS), 502, "bad-gateway"),
]


@pytest.mark.parametrize(
    ("answer", "status", "slug"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
async def test_upstream_answer_becomes_the_bff_problem(
    upstream: respx.MockRouter,
    answer: httpx.Response | type[Exception],
    status: int,
    slug: str,
) -> None:
    route = upstream.get(UP_FLOW)
    if isinstance(answer, httpx.Response):
        route.mock(return_value=answer)
    else:
        route.mock(side_effect=answer)
    async with bff_client(upstream) as client:
        response = await client.get(FLOW_URL)
    problem = assert_clean_problem(response, status, slug)
    assert route.call_count == 1
    sent = route.calls.last.request
    assert sent.headers["x-request-id"] == response.headers["x-request-id"]
    if slug == "insufficient-scope":
        assert problem["required_scope"] == "read:delivery-flows"
    if slug == "upstream-unavailable":
        assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("credential", "logged"),
    [
        (
            "relay",
            "the backend refused a relayed access token (401, request {request_id}); the "
            "backend must trust access tokens of http://127.0.0.1:8002",
        ),
        (
            "internal-jwt",
            "the backend refused a minted token (401, request {request_id}); the backend must "
            "trust issuer http://127.0.0.1:8000 with keys from "
            "http://127.0.0.1:8000/api/bff/v1/.well-known/jwks.json and audience 'zen-backend'",
        ),
    ],
)
async def test_an_upstream_401_is_a_configuration_error_for_operators_not_the_user(
    upstream: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    credential: str,
    logged: str,
) -> None:
    route = upstream.get(UP_FLOW).mock(
        return_value=upstream_problem(401, "unauthorized", INTERNALS)
    )
    upstream.get("/healthz").respond(200)
    settings = make_settings(upstream={"credential": credential, "max_attempts": 1})
    async with bff_client(upstream, settings) as client:
        ready_before = await client.get("/readyz")
        response = await client.get(FLOW_URL)
        ready_after = await client.get("/readyz")

    problem = assert_clean_problem(response, 502, "bad-gateway")
    assert "Signing in again will not help" in problem["detail"]
    assert "set-cookie" not in response.headers and "www-authenticate" not in response.headers
    if credential == "internal-jwt":
        assert route.calls.last.request.headers["authorization"].startswith("Bearer ey")
    (record,) = [r for r in caplog.records if "configuration error" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert logged.format(request_id=response.headers["x-request-id"]) in record.getMessage()
    assert ready_before.json()["warnings"] == {}
    # Reported, yet readiness is what it was: one caller's odd token must not take the instance
    # out of rotation.
    assert ready_after.status_code == ready_before.status_code
    assert ready_after.json()["checks"] == ready_before.json()["checks"]
    warning = ready_after.json()["warnings"]["upstreamCredentials"]
    assert warning.startswith("the backend refused ")
    assert "1 time(s) in the last 5 min" in warning


async def test_upstream_409_and_422_keep_only_the_user_facing_detail(
    upstream: respx.MockRouter,
) -> None:
    upstream.post(UP_FLOWS).mock(
        side_effect=[
            upstream_problem(409, "conflict", "name is already used in cluster_id"),
            upstream_problem(422, "idempotency-key-reused", "key was used for another request"),
        ]
    )
    async with bff_client(upstream) as client:
        conflict = await client.post(FLOWS, json=BODY)
        reused = await client.post(FLOWS, json=BODY, headers={"Idempotency-Key": "k1"})
    problem = assert_clean_problem(conflict, 409, "conflict")
    assert problem["detail"] == "name is already used in clusterId"
    problem = assert_clean_problem(reused, 422, "idempotency-key-reused")
    assert problem["detail"] == "key was used for another request"


@pytest.mark.parametrize(
    ("retry_after", "expected"), [("7", "7"), ("0", "1"), ("soon", "5"), (None, "5")]
)
async def test_upstream_429_is_rate_limited_with_retry_after(
    upstream: respx.MockRouter, retry_after: str | None, expected: str
) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    upstream.get(UP_FLOWS).mock(
        return_value=upstream_problem(429, "rate-limited", INTERNALS, headers=headers)
    )
    async with bff_client(upstream) as client:
        response = await client.get(FLOWS)
    assert_clean_problem(response, 429, "rate-limited")
    assert response.headers["retry-after"] == expected


async def test_upstream_retry_after_as_a_date_becomes_seconds(upstream: respx.MockRouter) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    upstream.get(UP_FLOWS).mock(
        return_value=upstream_problem(429, "rate-limited", headers={"Retry-After": when})
    )
    async with bff_client(upstream) as client:
        response = await client.get(FLOWS)
    assert_clean_problem(response, 429, "rate-limited")
    assert 100 <= int(response.headers["retry-after"]) <= 121


@pytest.mark.parametrize(("retry_after", "expected"), [("30", "30"), (None, "5")])
async def test_upstream_503_is_unavailable_with_retry_after(
    upstream: respx.MockRouter, retry_after: str | None, expected: str
) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    upstream.get(UP_FLOWS).mock(
        return_value=upstream_problem(503, "unavailable", INTERNALS, headers=headers)
    )
    async with bff_client(upstream) as client:
        response = await client.get(FLOWS)
    assert_clean_problem(response, 503, "upstream-unavailable")
    assert response.headers["retry-after"] == expected


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("retry_after", ["\u00b2", "9" * 400])
async def test_hostile_upstream_retry_after_is_not_a_500(
    upstream: respx.MockRouter, status: int, retry_after: str
) -> None:
    upstream.get(UP_FLOWS).mock(
        return_value=httpx.Response(
            status, headers=[(b"Retry-After", retry_after.encode("latin-1"))]
        )
    )
    async with bff_client(upstream) as client:
        response = await client.get(FLOWS)
    assert response.status_code == status, response.text
    assert response.headers["retry-after"] == "5"


async def test_failures_of_the_cluster_lookup_are_mapped_too(upstream: respx.MockRouter) -> None:
    upstream.get("/v1/tenants/ten_acme/clusters", name="clusters").mock(
        side_effect=httpx.ConnectError
    )
    flows = upstream.get(UP_FLOWS)
    async with bff_client(upstream) as client:
        response = await client.get(FLOWS)
        clusters = await client.get("/api/bff/v1/tenants/ten_acme/clusters")
    assert_clean_problem(response, 503, "upstream-unavailable")
    assert_clean_problem(clusters, 503, "upstream-unavailable")
    assert not flows.called


async def test_writes_that_fail_upstream_are_mapped(upstream: respx.MockRouter) -> None:
    upstream.get(UP_FLOW).respond(json=upstream_flow())
    upstream.put(UP_FLOW).mock(side_effect=httpx.ReadTimeout)
    upstream.delete(UP_FLOW).mock(return_value=upstream_problem(500, "internal", INTERNALS))
    async with bff_client(upstream) as client:
        updated = await client.put(FLOW_URL, json=BODY)
        deleted = await client.delete(FLOW_URL)
    assert_clean_problem(updated, 504, "upstream-timeout")
    assert_clean_problem(deleted, 502, "bad-gateway")


@pytest.mark.parametrize("flow_id", ["flow_1\r\nSet-Cookie: a=b", "../../../../auth/login"])
async def test_a_created_flow_id_outside_the_contract_never_reaches_the_location_header(
    upstream: respx.MockRouter, flow_id: str
) -> None:
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow(flow_id), headers={"ETag": '"1"'})
    async with bff_client(upstream) as client:
        response = await client.post(FLOWS, json=BODY)
    assert_clean_problem(response, 502, "bad-gateway")
    assert "location" not in response.headers


# --- our own failures ---------------------------------------------------------------------------


async def test_unexpected_exception_is_a_500_without_internals(
    upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.get(UP_FLOW).respond(json=upstream_flow(), headers={"ETag": '"1"'})

    def broken_view(*args: object) -> None:
        raise RuntimeError(INTERNALS)

    monkeypatch.setattr(bff.flows, "flow_view", broken_view)
    with caplog.at_level(logging.ERROR):
        async with bff_client(upstream) as client:
            response = await client.get(FLOW_URL)
    problem = assert_clean_problem(response, 500, "internal-error")
    assert "RuntimeError" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert problem["instance"] == response.headers["x-request-id"]
    # The operator still gets the whole story in the log.
    assert any(record.exc_info and record.exc_info[0] is RuntimeError for record in caplog.records)


# --- retries ------------------------------------------------------------------------------------


async def test_a_503_on_a_read_is_retried(upstream: respx.MockRouter) -> None:
    route = upstream.get(UP_FLOW).mock(
        side_effect=[
            upstream_problem(503, "unavailable", INTERNALS),
            httpx.Response(200, json=upstream_flow(), headers={"ETag": '"1"'}),
        ]
    )
    async with bff_client(upstream, make_settings(upstream={"max_attempts": 3})) as client:
        response = await client.get(FLOW_URL)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "flow_1"
    assert route.call_count == 2
    first, second = (call.request.headers for call in route.calls)
    assert first["x-request-id"] == second["x-request-id"] == response.headers["x-request-id"]


async def test_without_retries_a_503_is_answered_at_once(upstream: respx.MockRouter) -> None:
    route = upstream.get(UP_FLOW).mock(
        side_effect=[
            upstream_problem(503, "unavailable", INTERNALS),
            httpx.Response(200, json=upstream_flow()),
        ]
    )
    async with bff_client(upstream) as client:
        response = await client.get(FLOW_URL)
    assert_clean_problem(response, 503, "upstream-unavailable")
    assert route.call_count == 1


async def test_a_retried_create_reuses_its_idempotency_key(upstream: respx.MockRouter) -> None:
    route = upstream.post(UP_FLOWS).mock(
        side_effect=[
            httpx.ConnectError("refused"),
            upstream_problem(503, "unavailable", INTERNALS),
            httpx.Response(201, json=upstream_flow(), headers={"ETag": '"1"'}),
        ]
    )
    async with bff_client(upstream, make_settings(upstream={"max_attempts": 3})) as client:
        response = await client.post(FLOWS, json=BODY)
    assert response.status_code == 201, response.text
    keys = [call.request.headers["idempotency-key"] for call in route.calls]
    assert len(keys) == 3
    assert len(set(keys)) == 1
