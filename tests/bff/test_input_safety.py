"""Hostile input never reaches the upstream: path ids, query strings, bodies, methods, headers.

Raw paths are sent as a hand-made ASGI scope, because httpx normalises dot segments before a
request ever leaves the client; a server such as uvicorn hands the application the request target
verbatim, so the BFF must defend itself against exactly those bytes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

import httpx
import pytest
import respx
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from bff.auth import static_authenticator
from tests.support.gateway import ALICE, API, BFF, FLOWS, UP_FLOWS, in_process, upstream_flow

PROBLEM = "application/problem+json"
ERRORS = "https://api.zen-mesh.io/errors/"
GOOD_BODY = {"name": "stripe-to-app", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders"}
FLOW_URL = f"{FLOWS}/flow_1"


class CountingTransport(httpx.AsyncBaseTransport):
    """The mocked upstream, remembering every request handed to it (matched by a route or not)."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.requests: list[httpx.Request] = []
        self._inner = httpx.MockTransport(router.async_handler)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self._inner.handle_async_request(request)


@dataclass
class Harness:
    app: Starlette
    client: httpx.AsyncClient
    upstream: CountingTransport
    seen_raw_paths: list[bytes] = field(default_factory=list)

    async def raw(
        self,
        method: str,
        raw_path: bytes,
        *,
        query: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
    ) -> RawResponse:
        """Send ``raw_path`` to the app exactly as a server would receive it on the wire."""
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "root_path": "",
            # What uvicorn puts in "path": the percent-decoded target, dot segments untouched.
            "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
            "raw_path": raw_path,
            "query_string": query,
            "headers": [(b"host", b"127.0.0.1:8000"), *(headers or [])],
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
        }
        messages: list[Message] = []
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            messages.append(message)

        async def spy(scope: Scope, receive: Receive, send: Send) -> None:
            self.seen_raw_paths.append(scope["raw_path"])
            await self.app(scope, receive, send)

        await spy(scope, receive, send)
        start = next(m for m in messages if m["type"] == "http.response.start")
        content = b"".join(
            m.get("body", b"") for m in messages if m["type"] == "http.response.body"
        )
        response_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return RawResponse(start["status"], response_headers, content)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


@pytest.fixture
async def harness(upstream: respx.MockRouter) -> AsyncIterator[Harness]:
    transport = CountingTransport(upstream)
    async with in_process(transport, authenticators=[static_authenticator(ALICE)]) as running:
        yield Harness(running.app, running.client, transport)


def assert_problem(
    response: httpx.Response | RawResponse, status: int, slug: str
) -> dict[str, Any]:
    actual = response.status_code if isinstance(response, httpx.Response) else response.status
    assert actual == status, response.content
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["type"] == ERRORS + slug
    assert problem["status"] == status
    assert problem["instance"] == response.headers["x-request-id"]
    return problem


# --- hostile path ids ---------------------------------------------------------------------------

HOSTILE_SEGMENTS = [
    b"..",
    b".",
    b"%2e%2e",
    b"%2E%2E",
    b".%2e",
    b"%252e%252e",
    b"%252e",
    b"a%2Fb",
    b"a%2fb",
    b"a%5Cb",
    b"a\\b",
    b"%0d%0a",
    b"flow_1%0d%0aX-Injected:%201",
    b"a%00b",
    b"a%20b",
    "\u2024\u2024".encode(),  # one-dot leaders, sent as raw UTF-8
    b"%E2%80%A4%E2%80%A4",
    "\uff0e\uff0e".encode(),  # fullwidth full stops
    b"%EF%BC%8E%EF%BC%8E",
    b"a" * 65,
    b"f" * 200,
    b"flow.1",
    b"ten.acme",
    b"-leading-dash",
    b"_leading_underscore",
    b"",
    b"~tilde",
]

GOOD_IDS = {"tid": b"ten_acme", "cid": b"plane_dev_us_east_1", "fid": b"flow_1"}
ROUTES: list[tuple[list[str], list[str]]] = [
    (["tenants", "{tid}", "clusters"], ["GET"]),
    (["tenants", "{tid}", "clusters", "{cid}", "delivery-flows"], ["GET", "POST"]),
    (
        ["tenants", "{tid}", "clusters", "{cid}", "delivery-flows", "{fid}"],
        ["GET", "PUT", "DELETE"],
    ),
    (["tenants", "{tid}", "clusters", "{cid}", "delivery-flow-options"], ["GET"]),
]


def hostile_requests(segment: bytes) -> Iterator[tuple[str, bytes]]:
    """Every route and method, with ``segment`` in each id position in turn."""
    for parts, methods in ROUTES:
        for position, part in enumerate(parts):
            if not part.startswith("{"):
                continue
            segments = [
                segment if i == position else GOOD_IDS.get(p.strip("{}"), p.encode())
                for i, p in enumerate(parts)
            ]
            path = API.encode() + b"/" + b"/".join(segments)
            for method in methods:
                yield method, path


JSON_HEADERS = [(b"content-type", b"application/json")]


@pytest.mark.parametrize("segment", HOSTILE_SEGMENTS, ids=lambda s: s.decode("utf-8", "replace"))
async def test_hostile_path_ids_are_404_before_any_upstream_call(
    harness: Harness, segment: bytes
) -> None:
    body = json.dumps(GOOD_BODY).encode()
    sent = 0
    for method, raw_path in hostile_requests(segment):
        response = await harness.raw(method, raw_path, headers=JSON_HEADERS, body=body)
        assert harness.seen_raw_paths[-1] == raw_path
        assert response.status < 500, (method, raw_path, response.content)
        assert_problem(response, 404, "not-found")
        assert b"Traceback" not in response.content
        sent += 1
    assert sent >= 16
    assert harness.upstream.requests == []


async def test_dot_segments_that_escape_the_tenant_are_refused(harness: Harness) -> None:
    # After normalisation these would name another tenant's flows.
    for raw_path in (
        f"{API}/tenants/ten_acme/../ten_globex/clusters/plane_globex_main/delivery-flows",
        f"{API}/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flows/../../../clusters",
        f"{API}/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flows/./flow_1",
        f"{API}//tenants/ten_acme/clusters",
        f"{API}/tenants/ten_acme/clusters/",
    ):
        response = await harness.raw("GET", raw_path.encode())
        assert_problem(response, 404, "not-found")
    assert harness.upstream.requests == []


async def test_percent_encoded_ids_sent_through_httpx_are_refused(harness: Harness) -> None:
    # The same guard for what a real HTTP client sends: httpx keeps percent-escapes as written.
    for segment in ("%2e%2e", "%252e", "a%2Fb", "%0d%0a", "%E2%80%A4%E2%80%A4"):
        raw_path = f"{API}/tenants/ten_acme/clusters/{segment}/delivery-flows".encode()
        request = harness.client.build_request("GET", BFF)
        request.url = httpx.URL(BFF).copy_with(raw_path=raw_path)
        assert request.url.raw_path == raw_path
        response = await harness.client.send(request)
        assert_problem(response, 404, "not-found")
    assert harness.upstream.requests == []


async def test_well_formed_ids_pass_the_guard(harness: Harness, upstream: respx.MockRouter) -> None:
    # The guard must not be broader than the id rule: 64 characters is still an id.
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    longest = await harness.raw(
        "GET", f"{API}/tenants/ten_acme/clusters/{'c' * 64}/delivery-flows".encode()
    )
    # Refused by the cluster lookup, that is after the guard let it through.
    problem = assert_problem(longest, 404, "not-found")
    assert "cluster" in problem["detail"]
    assert [r.url.path for r in harness.upstream.requests] == ["/v1/tenants/ten_acme/clusters"]
    listed = await harness.raw("GET", FLOWS.encode())
    assert listed.status == 200
    assert "/v1/tenants/ten_acme/delivery-flows" in {r.url.path for r in harness.upstream.requests}


async def test_unknown_api_paths_are_404_problems(harness: Harness) -> None:
    for path in (
        f"{API}/tenants/ten_acme/unknown",
        f"{API}/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flows/flow_1/history",
        f"{API}/nothing-here",
    ):
        response = await harness.client.get(path)
        assert_problem(response, 404, "not-found")
    assert harness.upstream.requests == []


@pytest.mark.parametrize(
    "path", [f"{API}/auth/session/", f"{API}/openapi.json/", f"{API}/auth/logout/"]
)
async def test_api_paths_with_a_trailing_slash_are_404_not_redirects(
    harness: Harness, path: str
) -> None:
    # API calls never get a redirect; a 307 would also replay a POST to the other URL.
    response = await harness.client.request("POST" if "logout" in path else "GET", path)
    assert_problem(response, 404, "not-found")


# --- query strings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("limit=0", {"limit"}),
        ("limit=101", {"limit"}),
        ("limit=abc", {"limit"}),
        ("limit=-1", {"limit"}),
        ("limit=", {"limit"}),
        ("limit=1.5", {"limit"}),
        ("limit=%EF%BC%95", {"limit"}),  # a fullwidth digit five
        ("limit=5&limit=6", {"limit"}),
        ("cursor=a&cursor=b", {"cursor"}),
        ("page=2", {"page"}),
        ("cluster_id=plane_dev_eu_west_1", {"cluster_id"}),
        ("cursor=%3Cscript%3E", {"cursor"}),
        ("cursor=a%20b", {"cursor"}),
        ("cursor=a%2Fb", {"cursor"}),
        ("cursor=", {"cursor"}),
        ("cursor=" + "a" * 1025, {"cursor"}),
        ("limit=0&sort=name&cursor=%00", {"limit", "sort", "cursor"}),
    ],
)
async def test_bad_list_queries_are_400_with_field_errors(
    harness: Harness, query: str, fields: set[str]
) -> None:
    response = await harness.client.get(f"{FLOWS}?{query}")
    problem = assert_problem(response, 400, "validation-error")
    assert {error["field"] for error in problem["errors"]} == fields
    assert all(error["message"] for error in problem["errors"])
    assert harness.upstream.requests == []


async def test_repeated_limit_says_so(harness: Harness) -> None:
    response = await harness.client.get(f"{FLOWS}?limit=5&limit=5")
    problem = assert_problem(response, 400, "validation-error")
    assert problem["errors"] == [
        {"field": "limit", "message": "Give this parameter once.", "code": "repeated_parameter"}
    ]


async def test_limit_bounds_are_accepted(harness: Harness, upstream: respx.MockRouter) -> None:
    route = upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    for limit in ("1", "100"):
        response = await harness.client.get(FLOWS, params={"limit": limit, "cursor": "eyJhIjoxfQ"})
        assert response.status_code == 200
        assert response.json()["page"]["limit"] == int(limit)
    assert [call.request.url.params["limit"] for call in route.calls] == ["1", "100"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{API}/tenants/ten_acme/clusters"),
        ("GET", f"{API}/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flow-options"),
        ("GET", FLOW_URL),
        ("PUT", FLOW_URL),
        ("DELETE", FLOW_URL),
        ("POST", FLOWS),
    ],
)
async def test_unknown_query_params_elsewhere_are_400(
    harness: Harness, method: str, path: str
) -> None:
    response = await harness.client.request(
        method,
        path,
        params={"expand": "all"},
        json=GOOD_BODY if method in {"PUT", "POST"} else None,
    )
    problem = assert_problem(response, 400, "validation-error")
    assert [error["field"] for error in problem["errors"]] == ["expand"]
    assert harness.upstream.requests == []


# --- bodies -------------------------------------------------------------------------------------

LIMIT = 64 * 1024


def json_of_size(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    skeleton = b'{"name":"","sourceId":"ing_a","destinationId":"dest_b"}'
    body = skeleton.replace(b'"name":""', b'"name":"' + b"n" * (size - len(skeleton)) + b'"')
    assert len(body) == size
    return body


@pytest.mark.parametrize(("method", "path"), [("POST", FLOWS), ("PUT", FLOW_URL)])
async def test_body_over_64_kib_with_content_length_is_413(
    harness: Harness, method: str, path: str
) -> None:
    response = await harness.client.request(
        method, path, content=json_of_size(LIMIT + 1), headers={"Content-Type": "application/json"}
    )
    assert response.request.headers["content-length"] == str(LIMIT + 1)
    assert_problem(response, 413, "payload-too-large")
    assert harness.upstream.requests == []


async def test_body_of_exactly_64_kib_is_read(harness: Harness) -> None:
    response = await harness.client.post(
        FLOWS, content=json_of_size(LIMIT), headers={"Content-Type": "application/json"}
    )
    # Read and validated (the name is far too long), not refused for its size.
    problem = assert_problem(response, 400, "validation-error")
    assert [error["field"] for error in problem["errors"]] == ["name"]


@pytest.mark.parametrize(("method", "path"), [("POST", FLOWS), ("PUT", FLOW_URL)])
async def test_chunked_body_over_64_kib_is_413_and_not_read_to_the_end(
    harness: Harness, method: str, path: str
) -> None:
    chunks_sent = 0

    async def endless_json() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        yield b'{"name":"'
        for _ in range(1000):
            chunks_sent += 1
            yield b"n" * 8192

    request = harness.client.build_request(
        method, path, content=endless_json(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = await harness.client.send(request)
    assert_problem(response, 413, "payload-too-large")
    assert chunks_sent < 20
    assert harness.upstream.requests == []


async def test_a_body_longer_than_its_content_length_is_still_capped(harness: Harness) -> None:
    # The declared length is only a hint; the bytes actually read are what count.
    response = await harness.raw(
        "POST",
        FLOWS.encode(),
        headers=[(b"content-type", b"application/json"), (b"content-length", b"50")],
        body=json_of_size(LIMIT + 1),
    )
    assert_problem(response, 413, "payload-too-large")
    assert harness.upstream.requests == []


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "application/jsonp",
        "text/json",
    ],
)
@pytest.mark.parametrize(("method", "path"), [("POST", FLOWS), ("PUT", FLOW_URL)])
async def test_non_json_bodies_are_415(
    harness: Harness, method: str, path: str, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await harness.client.request(
        method, path, content=json.dumps(GOOD_BODY).encode(), headers=headers
    )
    if content_type is None:
        assert "content-type" not in response.request.headers
    assert_problem(response, 415, "unsupported-media-type")
    assert harness.upstream.requests == []


async def test_json_content_type_variants_are_accepted(
    harness: Harness, upstream: respx.MockRouter
) -> None:
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow(), headers={"ETag": '"1"'})
    for content_type in (
        "application/json",
        "application/json; charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json; profile=flow; charset=utf-8",
    ):
        response = await harness.client.post(
            FLOWS, content=json.dumps(GOOD_BODY).encode(), headers={"Content-Type": content_type}
        )
        assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "content", [b'{"name": ', b"", b"{'name': 'x'}", b"\xff\xfe{}", b'{"name": "a",}', b"NaN"]
)
async def test_malformed_json_is_400(harness: Harness, content: bytes) -> None:
    response = await harness.client.post(
        FLOWS, content=content, headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 400, "validation-error")
    assert problem["errors"][0]["code"] == "malformed_json"
    assert harness.upstream.requests == []


@pytest.mark.parametrize(
    "content", [b"[" * 5000 + b"]" * 5000, b'{"retryPolicy": ' + b"[" * 5000 + b"]" * 5000 + b"}"]
)
async def test_deeply_nested_json_is_400_not_500(harness: Harness, content: bytes) -> None:
    # Well within the size limit, but deeper than the decoder's recursion limit.
    response = await harness.client.post(
        FLOWS, content=content, headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 400, "validation-error")
    assert problem["errors"][0]["code"] == "malformed_json"
    assert harness.upstream.requests == []


@pytest.mark.parametrize("content", [b"[]", b'"flow"', b"3", b"null"])
async def test_body_that_is_not_an_object_is_400(harness: Harness, content: bytes) -> None:
    response = await harness.client.post(
        FLOWS, content=content, headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 400, "validation-error")
    assert problem["errors"][0]["field"] == ""
    assert harness.upstream.requests == []


def with_fields(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = dict(GOOD_BODY)
    for key, value in changes.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body


FIELD_CASES: list[tuple[dict[str, Any], str, str]] = [
    (with_fields(name=...), "name", "required"),
    (with_fields(name=""), "name", "invalid"),
    (with_fields(name="   "), "name", "invalid"),
    (with_fields(name=7), "name", "invalid"),
    (with_fields(name="n" * 129), "name", "too_long"),
    (with_fields(sourceId=...), "sourceId", "required"),
    (with_fields(sourceId="ing/../x"), "sourceId", "invalid"),
    (with_fields(sourceId="ing.a"), "sourceId", "invalid"),
    (with_fields(sourceId="i" * 65), "sourceId", "invalid"),
    (with_fields(sourceId=42), "sourceId", "invalid"),
    (with_fields(destinationId=...), "destinationId", "required"),
    (with_fields(destinationId="dest b"), "destinationId", "invalid"),
    (with_fields(retryPolicy={"maxAttempts": 0}), "retryPolicy.maxAttempts", "out_of_range"),
    (with_fields(retryPolicy={"maxAttempts": 11}), "retryPolicy.maxAttempts", "out_of_range"),
    (with_fields(retryPolicy={"maxAttempts": "3"}), "retryPolicy.maxAttempts", "type"),
    (with_fields(retryPolicy={"maxAttempts": True}), "retryPolicy.maxAttempts", "type"),
    (with_fields(retryPolicy={"maxAttempts": 3.5}), "retryPolicy.maxAttempts", "type"),
    (with_fields(retryPolicy={"maxAttempts": None}), "retryPolicy.maxAttempts", "type"),
    (with_fields(retryPolicy={"backoffSeconds": 0}), "retryPolicy.backoffSeconds", "out_of_range"),
    (
        with_fields(retryPolicy={"backoffSeconds": 3601}),
        "retryPolicy.backoffSeconds",
        "out_of_range",
    ),
    (with_fields(retryPolicy="fast"), "retryPolicy", "type"),
    (with_fields(retryPolicy={"jitter": 0.5}), "retryPolicy.jitter", "unknown_field"),
    (with_fields(color="blue"), "color", "unknown_field"),
    (with_fields(source_id="ing_a"), "source_id", "unknown_field"),
    (with_fields(clusterId="plane_dev_eu_west_1"), "clusterId", "unknown_field"),
]


@pytest.mark.parametrize(("method", "path"), [("POST", FLOWS), ("PUT", FLOW_URL)])
@pytest.mark.parametrize(("body", "field_name", "code"), FIELD_CASES)
async def test_each_body_rule_reports_the_ui_field(
    harness: Harness, method: str, path: str, body: dict[str, Any], field_name: str, code: str
) -> None:
    response = await harness.client.request(method, path, json=body)
    problem = assert_problem(response, 400, "validation-error")
    assert [(e["field"], e["code"]) for e in problem["errors"]] == [(field_name, code)]
    assert problem["detail"].startswith(f"{field_name}: ")
    assert harness.upstream.requests == []


@pytest.mark.parametrize(
    ("field_name", "value", "words"),
    [
        ("destinationIds", ["dest_a", "dest_b"], "fanout"),
        ("targets", [{"id": "dest_a"}], "fanout"),
        ("draft", True, "draft"),
        ("status", "published", "draft"),
        ("gitops", {"repo": "git@example:flows"}, "gitops"),
    ],
)
async def test_features_outside_v1_are_refused_clearly(
    harness: Harness, field_name: str, value: Any, words: str
) -> None:
    response = await harness.client.post(FLOWS, json={**GOOD_BODY, field_name: value})
    problem = assert_problem(response, 400, "validation-error")
    [error] = problem["errors"]
    assert error["field"] == field_name
    assert error["code"] == "not_supported"
    assert words in error["message"].lower()
    assert "V1" in error["message"]
    assert harness.upstream.requests == []


async def test_every_body_error_is_reported_at_once(harness: Harness) -> None:
    response = await harness.client.post(
        FLOWS,
        json={
            "name": "",
            "sourceId": "bad id",
            "retryPolicy": {"maxAttempts": 0, "backoffSeconds": 3601, "jitter": 1},
            "draft": True,
            "extra": 1,
        },
    )
    problem = assert_problem(response, 400, "validation-error")
    assert {e["field"]: e["code"] for e in problem["errors"]} == {
        "name": "invalid",
        "sourceId": "invalid",
        "destinationId": "required",
        "retryPolicy.maxAttempts": "out_of_range",
        "retryPolicy.backoffSeconds": "out_of_range",
        "retryPolicy.jitter": "unknown_field",
        "draft": "not_supported",
        "extra": "unknown_field",
    }
    assert harness.upstream.requests == []


async def test_body_boundaries_are_accepted(harness: Harness, upstream: respx.MockRouter) -> None:
    route = upstream.post(UP_FLOWS).respond(201, json=upstream_flow(), headers={"ETag": '"1"'})
    for max_attempts, backoff in ((1, 1), (10, 3600)):
        response = await harness.client.post(
            FLOWS,
            json={
                **GOOD_BODY,
                "name": "n" * 128,
                "sourceId": "i" * 64,
                "retryPolicy": {"maxAttempts": max_attempts, "backoffSeconds": backoff},
            },
        )
        assert response.status_code == 201, response.text
    sent = [json.loads(call.request.content) for call in route.calls]
    assert [body["config"]["retry_policy"] for body in sent] == [
        {"max_attempts": 1, "backoff_seconds": 1},
        {"max_attempts": 10, "backoff_seconds": 3600},
    ]
    assert sent[0]["name"] == "n" * 128


# --- methods and headers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", FLOW_URL, {"GET", "HEAD", "PUT", "DELETE"}),
        ("POST", FLOW_URL, {"GET", "HEAD", "PUT", "DELETE"}),
        ("PATCH", FLOWS, {"GET", "HEAD", "POST"}),
        ("PUT", FLOWS, {"GET", "HEAD", "POST"}),
        ("DELETE", FLOWS, {"GET", "HEAD", "POST"}),
        ("POST", f"{API}/tenants/ten_acme/clusters", {"GET", "HEAD"}),
        (
            "DELETE",
            f"{API}/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flow-options",
            {"GET", "HEAD"},
        ),
        ("POST", f"{API}/openapi.json", {"GET", "HEAD"}),
    ],
)
async def test_other_methods_are_405_with_allow(
    harness: Harness, method: str, path: str, allowed: set[str]
) -> None:
    response = await harness.client.request(method, path, json=GOOD_BODY)
    problem = assert_problem(response, 405, "method-not-allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed
    assert method in problem["detail"]
    assert harness.upstream.requests == []


@pytest.mark.parametrize("if_match", ["1", "abc", '"a" "b"', 'W/"1', '"1",', 'W/ "1"', '"a\\"b"'])
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_malformed_if_match_is_400(harness: Harness, method: str, if_match: str) -> None:
    response = await harness.client.request(
        method,
        FLOW_URL,
        json=GOOD_BODY if method == "PUT" else None,
        headers={"If-Match": if_match},
    )
    problem = assert_problem(response, 400, "validation-error")
    assert [e["field"] for e in problem["errors"]] == ["If-Match"]
    assert harness.upstream.requests == []


@pytest.mark.parametrize("key", ["", "has space", "k" * 256, "a/b", "key;drop", "ke\ty"])
@pytest.mark.parametrize(
    ("method", "path"), [("POST", FLOWS), ("PUT", FLOW_URL), ("DELETE", FLOW_URL)]
)
async def test_malformed_idempotency_key_is_400(
    harness: Harness, method: str, path: str, key: str
) -> None:
    response = await harness.client.request(
        method,
        path,
        json=GOOD_BODY if method != "DELETE" else None,
        headers={"Idempotency-Key": key},
    )
    problem = assert_problem(response, 400, "validation-error")
    assert [e["field"] for e in problem["errors"]] == ["Idempotency-Key"]
    assert harness.upstream.requests == []


async def test_well_formed_preconditions_and_keys_are_forwarded(
    harness: Harness, upstream: respx.MockRouter
) -> None:
    upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow())
    delete = upstream.delete(f"{UP_FLOWS}/flow_1").respond(204)
    for if_match in ('"1"', 'W/"1"', "*", '"1", "2"'):
        response = await harness.client.delete(
            FLOW_URL, headers={"If-Match": if_match, "Idempotency-Key": "ui:key_1.a-b"}
        )
        assert response.status_code == 204
    assert [c.request.headers["if-match"] for c in delete.calls] == [
        '"1"',
        'W/"1"',
        "*",
        '"1", "2"',
    ]
    assert {c.request.headers["idempotency-key"] for c in delete.calls} == {"ui:key_1.a-b"}


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b'{"name": "a\xff\xfeb"}', "The body is not valid UTF-8."),
        (b'{"name": "\xc3"}', "The body is not valid UTF-8."),
        (b'{"name": "a", "name": "b"}', "The body names 'name' twice."),
        (
            b'{"name": "a", "retryPolicy": {"maxAttempts": 3, "maxAttempts": 4}}',
            "The body names 'maxAttempts' twice.",
        ),
        (b'{"name": "a", "retryPolicy": {"maxAttempts": Infinity}}', "not a JSON number"),
    ],
)
async def test_bodies_that_are_not_strict_json_are_400_saying_why(
    harness: Harness, content: bytes, detail: str
) -> None:
    response = await harness.client.post(
        FLOWS, content=content, headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 400, "validation-error")
    assert problem["errors"][0]["code"] == "malformed_json"
    assert detail in problem["detail"]
    assert harness.upstream.requests == []


@pytest.mark.parametrize(
    "name",
    [
        "pay\u202eload",  # right-to-left override
        "pay\u2066load\u2069",  # isolates
        "pay\u200bload",  # zero-width space
        "pay\u200dload",  # zero-width joiner
        "\ufeffpayload",  # byte-order mark
        "pay\x00load",
        "pay\x1bload",  # C0: escape
        "pay\x85load",  # C1: next line
        "pay\u2028load",  # line separator
        "pay\u2029load",  # paragraph separator
        "pay\ud800load",  # a lone surrogate, as JSON allows it escaped
    ],
)
async def test_names_with_invisible_or_direction_characters_are_refused(
    harness: Harness, name: str
) -> None:
    response = await harness.client.post(
        FLOWS,
        content=json.dumps({**GOOD_BODY, "name": name}).encode(),
        headers={"Content-Type": "application/json"},
    )
    problem = assert_problem(response, 400, "validation-error")
    assert [(e["field"], e["code"]) for e in problem["errors"]] == [("name", "invalid_character")]
    assert harness.upstream.requests == []


@pytest.mark.parametrize(
    "name", ["Zahlungseingänge", "支払い-取り込み", "δοκιμή 2", "café à Paris"]
)
async def test_names_in_any_script_are_accepted(
    harness: Harness, upstream: respx.MockRouter, name: str
) -> None:
    created = upstream.post(UP_FLOWS).respond(201, json=upstream_flow(name=name))
    response = await harness.client.post(FLOWS, json={**GOOD_BODY, "name": name})
    assert response.status_code == 201, response.text
    assert json.loads(created.calls.last.request.content)["name"] == name
