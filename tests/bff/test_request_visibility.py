"""What an operator sees of a request: the access line, Server-Timing, the W3C trace carried to the
upstream, ``traceId`` in problems, request ids on other log lines, the caller's address, metrics
and the audit trail's trace and client address."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from bff import context, logs
from bff.auth import static_authenticator
from bff.context import RequestContext, client_ip
from bff.http import rfc3339
from bff.logs import JsonFormatter, TextFormatter
from bff.middleware import EdgeMiddleware
from bff.observability import Metrics
from tests.support.gateway import (
    ALICE,
    API,
    BOB,
    CALLBACK,
    FLOWS,
    LOGIN,
    LOGOUT,
    UP_FLOWS,
    BffFactory,
    in_process,
    make_settings,
    upstream_flow,
)
from tests.support.signin import running_app

REPO = Path(__file__).resolve().parents[2]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT_SPAN}-01"
LIST_ROUTE = "/api/bff/v1/tenants/{tid}/clusters/{cid}/delivery-flows"
RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
HEX32 = re.compile(r"[0-9a-f]{32}")
CHILD = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")
SERVER_TIMING = re.compile(
    r"app;dur=(-?\d+\.\d+), upstream;dur=(-?\d+\.\d+), cache;desc=(hit|miss|bypass)"
)
EMPTY_PAGE = {"delivery_flows": [], "next_cursor": None}
WRITE = {"name": "stripe-to-app", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"}


# --- capturing the access log -------------------------------------------------------------------


class Lines(logging.Handler):
    """Every record it is given, formatted, as the line the gateway would write."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def access(self) -> list[dict[str, Any]]:
        for line in self.lines:
            assert "\n" not in line and "\r" not in line
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def access_log() -> Iterator[Lines]:
    """The ``bff.access`` logger, on at INFO, formatted as JSON (restored afterwards)."""
    logger = logging.getLogger("bff.access")
    handler = Lines(JsonFormatter())
    level, disabled = logger.level, logger.disabled
    logger.setLevel(logging.INFO)
    logger.disabled = False
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled


def _server_timing(response: httpx.Response) -> tuple[float, float, str]:
    match = SERVER_TIMING.fullmatch(response.headers["server-timing"])
    assert match, response.headers["server-timing"]
    return float(match[1]), float(match[2]), match[3]


def _children(calls: Any) -> list[tuple[str, str, str]]:
    """(trace id, span id, flags) of the ``traceparent`` each upstream call carried."""
    parsed = []
    for call in calls:
        match = CHILD.fullmatch(call.request.headers["traceparent"])
        assert match, call.request.headers["traceparent"]
        parsed.append((match[1], match[2], match[3]))
    return parsed


# --- 1. the access line -------------------------------------------------------------------------


async def test_the_access_line_of_a_flow_list_names_everything_an_operator_needs(
    bff: BffFactory, upstream: respx.MockRouter, access_log: Lines
) -> None:
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [upstream_flow()], "next_cursor": None})
    async with bff() as client:
        before = len(upstream.calls)
        response = await client.get(FLOWS)
        calls = len(upstream.calls) - before
    assert response.status_code == 200
    assert calls == 4  # clusters, flows, ingesters, destinations
    (line,) = access_log.access()
    assert line["log"] == "access"
    assert line["level"] == "info"
    assert RFC3339_MS.fullmatch(line["time"]), line["time"]
    assert line["request_id"] == response.headers["x-request-id"]
    assert HEX32.fullmatch(line["trace_id"]) and line["trace_id"] != "0" * 32
    assert line["method"] == "GET"
    assert line["route"] == LIST_ROUTE
    assert line["status"] == 200
    assert line["duration_ms"] >= line["upstream_ms"] >= 0
    assert line["upstream_calls"] == calls
    assert line["retries"] == 0
    assert line["cache"] == "bypass"
    assert line["tenant_id"] == "ten_acme"
    assert line["cluster_id"] == "plane_dev_us_east_1"
    assert line["sub"] == "alice"
    assert "ten_acme" not in line["route"]


async def test_the_access_line_keeps_a_sane_caller_request_id_and_names_problems(
    bff: BffFactory, upstream: respx.MockRouter, access_log: Lines
) -> None:
    async with bff(principal=None) as client:
        anonymous = await client.get(FLOWS, headers={"X-Request-ID": "caller-id-1234"})
        sneaky = await client.get(f"{API}/tenants/ten_acme/clusters/..%2f/delivery-flows")
    assert anonymous.status_code == 401 and sneaky.status_code == 404
    first, second = access_log.access()
    assert (first["request_id"], first["status"], first["route"]) == (
        "caller-id-1234",
        401,
        LIST_ROUTE,
    )
    assert first["sub"] is None and first["upstream_calls"] == 0
    assert (second["status"], second["route"]) == (404, "unmatched")
    assert second["request_id"] == sneaky.headers["x-request-id"]
    assert second["tenant_id"] is None and second["sub"] is None


# --- 2. the micro-cache -------------------------------------------------------------------------


async def test_a_cached_list_logs_miss_then_hit_without_upstream_calls(
    bff: BffFactory, upstream: respx.MockRouter, access_log: Lines
) -> None:
    route = upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    async with bff(settings=make_settings(cache={"ttl_seconds": 30})) as client:
        first = await client.get(FLOWS)
        calls_after_first = len(upstream.calls)
        second = await client.get(FLOWS)
        calls_after_second = len(upstream.calls)
    assert first.status_code == second.status_code == 200
    assert route.call_count == 1
    miss, hit = access_log.access()
    assert miss["cache"] == "miss" and miss["upstream_calls"] == calls_after_first > 0
    assert hit["cache"] == "hit"
    assert hit["upstream_calls"] == 0 == calls_after_second - calls_after_first
    assert hit["upstream_ms"] == 0
    assert _server_timing(first)[2] == "miss"
    assert _server_timing(second)[2] == "hit"
    assert "cache;desc=miss" in first.headers["server-timing"]
    assert "cache;desc=hit" in second.headers["server-timing"]


async def test_the_catalog_says_whether_it_answered_and_only_when_it_is_the_answer(
    bff: BffFactory, upstream: respx.MockRouter, access_log: Lines
) -> None:
    """The clusters and the form options are served from the catalog's cache: a repeated call is
    a hit. The catalog's lookups beside another answer (the cluster exists, the flows' names)
    leave that answer's outcome alone: a list with the micro-cache off, a write, bypass it."""
    upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow(), headers={"ETag": '"1"'})
    clusters, options = f"{API}/tenants/ten_acme/clusters", FLOWS.replace("-flows", "-flow-options")
    async with bff() as client:
        answers = [
            await client.get(clusters),
            await client.get(clusters),
            await client.get(options),
            await client.get(options),
            await client.get(FLOWS),
            await client.get(FLOWS),
            await client.post(FLOWS, json=WRITE, headers={"Origin": "http://127.0.0.1:8000"}),
        ]
    assert [answer.status_code for answer in answers] == [200] * 6 + [201]
    outcomes = ["miss", "hit", "miss", "hit", "bypass", "bypass", "bypass"]
    assert [_server_timing(answer)[2] for answer in answers] == outcomes
    assert [line["cache"] for line in access_log.access()] == outcomes


# --- 3. retries ---------------------------------------------------------------------------------


async def test_a_retried_upstream_call_is_counted_once_as_a_retry_twice_as_a_call(
    bff: BffFactory, upstream: respx.MockRouter, access_log: Lines
) -> None:
    route = upstream.get(UP_FLOWS).mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=EMPTY_PAGE)]
    )
    async with bff() as client:
        before = len(upstream.calls)
        response = await client.get(FLOWS)
        calls = len(upstream.calls) - before
    assert response.status_code == 200, response.text
    assert route.call_count == 2
    (line,) = access_log.access()
    assert line["retries"] == 1
    assert line["upstream_calls"] == calls == 5
    # Each attempt is its own child span of the same trace.
    first, second = _children(route.calls)
    assert first[0] == second[0] == line["trace_id"]
    assert first[1] != second[1]


# --- 4. Server-Timing ---------------------------------------------------------------------------


async def test_server_timing_is_on_api_responses_only(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    async with bff() as client:
        listed = await client.get(FLOWS)
        refused = await client.get(f"{API}/no-such-thing")
        health = await client.get("/healthz")
    app, up, cache = _server_timing(listed)
    assert app >= 0 and up >= 0 and cache == "bypass"
    assert _server_timing(refused)[1] == 0  # a problem answered at the edge has it too
    assert health.status_code == 200
    assert "server-timing" not in health.headers


async def test_side_by_side_upstream_calls_count_once_in_the_app_time(
    upstream: respx.MockRouter, access_log: Lines
) -> None:
    """The flow page and the two name lookups go to the upstream at the same time: ``upstream``
    sums the three calls, while ``app`` leaves out the time any of them was in flight, once."""
    upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    slow = (UP_FLOWS, "/v1/tenants/ten_acme/ingesters", "/v1/tenants/ten_acme/destinations")

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path in slow:
            await asyncio.sleep(0.1)
        return await upstream.async_handler(request)

    async with in_process(
        httpx.MockTransport(answer), authenticators=[static_authenticator(ALICE)]
    ) as running:
        response = await running.client.get(FLOWS)
    assert response.status_code == 200
    (line,) = access_log.access()
    app, up, _ = _server_timing(response)
    assert line["upstream_calls"] == 4
    assert line["upstream_ms"] >= 290, line  # three calls of 100 ms each, summed
    assert up >= 290
    assert line["duration_ms"] < line["upstream_ms"], "the calls overlapped"
    assert 0 <= app <= line["duration_ms"] - 90, response.headers["server-timing"]


# --- 5. trace context to the upstream -----------------------------------------------------------


async def test_the_callers_trace_reaches_the_upstream_with_a_new_span_per_call(
    bff: BffFactory, upstream: respx.MockRouter, access_log: Lines
) -> None:
    upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    async with bff() as client:
        response = await client.get(
            FLOWS, headers={"traceparent": TRACEPARENT, "tracestate": state}
        )
    assert response.status_code == 200
    calls = list(upstream.calls)
    assert len(calls) == 4
    children = _children(calls)
    assert {trace for trace, _, _ in children} == {TRACE}
    assert {flags for _, _, flags in children} == {"01"}
    spans = [span for _, span, _ in children]
    assert PARENT_SPAN not in spans
    assert "0" * 16 not in spans
    assert len(set(spans)) == len(spans), "every call is its own span"
    assert all(call.request.headers["tracestate"] == state for call in calls)
    (line,) = access_log.access()
    assert line["trace_id"] == TRACE


@pytest.mark.parametrize(
    "incoming",
    [
        f"00-{TRACE.upper()}-{PARENT_SPAN}-01",
        f"00-{'0' * 32}-{PARENT_SPAN}-01",
        f"ff-{TRACE}-{PARENT_SPAN}-01",
        "garbage",
        None,
    ],
    ids=["uppercase", "zero-trace", "version-ff", "garbage", "absent"],
)
async def test_without_a_valid_traceparent_a_new_unsampled_trace_starts(
    bff: BffFactory, upstream: respx.MockRouter, access_log: Lines, incoming: str | None
) -> None:
    upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    headers = {"tracestate": "rojo=1"}
    if incoming is not None:
        headers["traceparent"] = incoming
    async with bff() as client:
        response = await client.get(FLOWS, headers=headers)
        again = await client.get(FLOWS, headers=headers)
    assert response.status_code == again.status_code == 200
    calls = list(upstream.calls)
    children = _children(calls)
    traces = {trace for trace, _, _ in children}
    assert len(traces) == 2, "each request starts its own trace"
    assert TRACE not in traces and TRACE.upper() not in traces and "0" * 32 not in traces
    assert {flags for _, _, flags in children} == {"00"}
    # The caller's tracestate belongs to the caller's trace, which was not taken up.
    assert all("tracestate" not in call.request.headers for call in calls)
    lines = access_log.access()
    assert [line["trace_id"] for line in lines] == [children[0][0], children[-1][0]]
    first_request = {
        trace
        for (trace, _, _), call in zip(children, calls, strict=True)
        if call.request.headers["x-request-id"] == response.headers["x-request-id"]
    }
    assert first_request == {lines[0]["trace_id"]}


# --- 6. traceId in problems ---------------------------------------------------------------------


async def test_problems_name_the_request_and_the_callers_trace(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    upstream.get(f"{UP_FLOWS}/flow_gone").respond(
        404,
        json={"type": "x", "title": "Not Found", "status": 404, "detail": "no"},
        headers={"Content-Type": "application/problem+json"},
    )
    traced = {"traceparent": TRACEPARENT}
    async with bff() as client:
        gone = await client.get(f"{FLOWS}/flow_gone", headers=traced)
        unknown = await client.get(f"{API}/no-such-thing", headers=traced)
        sneaky = await client.get(f"{API}/tenants/ten_acme/clusters/..%2f/x", headers=traced)
        wrong_method = await client.patch(FLOWS, headers=traced)
    async with bff(principal=BOB) as client:
        refused = await client.post(FLOWS, json=WRITE, headers=traced)
    for response, status in [
        (gone, 404),
        (unknown, 404),
        (sneaky, 404),
        (wrong_method, 405),
        (refused, 403),
    ]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["traceId"] == TRACE, (status, body)
        assert body["instance"] == response.headers["x-request-id"]


async def test_a_problem_without_an_incoming_trace_names_the_trace_the_gateway_started(
    bff: BffFactory, upstream: respx.MockRouter, access_log: Lines
) -> None:
    upstream.get(f"{UP_FLOWS}/flow_gone").respond(404)
    async with bff() as client:
        gone = await client.get(f"{FLOWS}/flow_gone")
    body = gone.json()
    assert HEX32.fullmatch(body["traceId"])
    (line,) = access_log.access()
    assert body["traceId"] == line["trace_id"]
    assert {trace for trace, _, _ in _children(upstream.calls)} == {body["traceId"]}


# --- 7. nothing outside can forge a log line ----------------------------------------------------


def _access_record(**overrides: Any) -> logging.LogRecord:
    fields: dict[str, Any] = {
        "request_id": "req_0123456789abcdef01234567",
        "trace_id": TRACE,
        "method": "GET",
        "route": LIST_ROUTE,
        "status": 200,
        "duration_ms": 12.5,
        "upstream_ms": 3.25,
        "upstream_calls": 2,
        "retries": 0,
        "provider_ms": 0.0,
        "cache": "bypass",
        "tenant_id": "ten_acme",
        "cluster_id": "plane_dev_us_east_1",
        "sub": "alice",
        **overrides,
    }
    return logging.getLogger("bff.access").makeRecord(
        "bff.access", logging.INFO, __file__, 1, "", (), None, extra={"access": fields}
    )


def test_text_access_line_quotes_what_came_from_outside_and_stays_one_line() -> None:
    sub = 'mallory\n2026-01-01T00:00:00.000Z INFO    GET / 200 sub=admin x"y'
    route = "/api/bff/v1/x\n/forged"
    record = _access_record(sub=sub, route=route, tenant_id="ten acme")
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line
    assert f"sub={json.dumps(sub)} " in line
    assert f" {json.dumps(route)} 200 " in line
    assert 'tenant="ten acme"' in line
    assert line.endswith(f"request_id=req_0123456789abcdef01234567 trace_id={TRACE}")
    # Plain values are written as they are.
    plain = TextFormatter().format(_access_record())
    assert f" GET {LIST_ROUTE} 200 12.5ms " in plain
    assert "sub=alice " in plain and "tenant=ten_acme " in plain


def test_text_access_line_names_a_missing_value_with_a_dash() -> None:
    line = TextFormatter().format(_access_record(sub=None, tenant_id=None, cluster_id=None))
    assert "tenant=- cluster=- sub=- " in line


def test_json_access_line_is_one_line_and_round_trips() -> None:
    sub = "mallory\nsub=admin \u2028 \x1b[31m"
    record = _access_record(sub=sub, route="/x\r\n/y")
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    parsed = json.loads(line)
    assert parsed["sub"] == sub and parsed["route"] == "/x\r\n/y"
    assert parsed["log"] == "access" and parsed["level"] == "info"


def test_an_app_message_quoting_a_caller_stays_on_one_line() -> None:
    record = logging.getLogger("bff.test").makeRecord(
        "bff.test", logging.WARNING, __file__, 1, "bad value %r then %s", ("x", "a\nb\rc"), None
    )
    text = TextFormatter().format(record)
    assert "\n" not in text and "\r" not in text
    assert text.endswith("WARNING bff.test: bad value 'x' then a\\nb\\rc")
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line)["message"] == "bad value 'x' then a\nb\rc"


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1700000000.0625, "2023-11-14T22:13:20.062Z"),
        (1700000000.5, "2023-11-14T22:13:20.500Z"),
        (1700000039.9999, "2023-11-14T22:13:59.999Z"),
    ],
)
def test_times_are_rfc3339_utc_with_milliseconds(epoch: float, expected: str) -> None:
    assert rfc3339(epoch) == expected


# --- 8. other log lines carry the request's ids -------------------------------------------------


def _raise() -> None:
    raise ValueError("boom")


def test_app_records_logged_during_a_request_carry_its_ids() -> None:
    logger = logging.getLogger("bff.test")
    outside = json.loads(
        JsonFormatter().format(
            logger.makeRecord("bff.test", logging.INFO, __file__, 1, "idle", (), None)
        )
    )
    assert "request_id" not in outside and "trace_id" not in outside

    request = RequestContext("req_x0123456789abcdef", None)
    token = context.enter(request)
    try:
        plain = logger.makeRecord("bff.test", logging.ERROR, __file__, 1, "hello %s", ("w",), None)
        try:
            _raise()
        except ValueError:
            failed = logger.makeRecord(
                "bff.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
            )
        line = JsonFormatter().format(plain)
        with_exception = JsonFormatter().format(failed)
        text = TextFormatter().format(plain)
    finally:
        context.leave(token)
    assert context.current() is None

    parsed = json.loads(line)
    assert parsed["log"] == "app"
    assert parsed["level"] == "error"
    assert parsed["logger"] == "bff.test"
    assert parsed["message"] == "hello w"
    assert parsed["request_id"] == "req_x0123456789abcdef"
    assert parsed["trace_id"] == request.trace_id and HEX32.fullmatch(request.trace_id)
    assert RFC3339_MS.fullmatch(parsed["time"])
    assert "exception" not in parsed

    assert "\n" not in with_exception
    failure = json.loads(with_exception)
    assert failure["request_id"] == "req_x0123456789abcdef"
    assert "Traceback" in failure["exception"] and "ValueError: boom" in failure["exception"]

    assert text.endswith("bff.test: hello w request_id=req_x0123456789abcdef")


async def test_records_logged_while_answering_a_request_carry_its_request_id(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    # A 500 from the upstream is logged by the gateway while the request is answered.
    upstream.get(f"{UP_FLOWS}/flow_1").respond(500)
    handler = Lines(JsonFormatter())
    logger = logging.getLogger("bff")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async with bff() as client:
            response = await client.get(f"{FLOWS}/flow_1", headers={"traceparent": TRACEPARENT})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert response.status_code == 502
    app_lines = [json.loads(line) for line in handler.lines]
    app_lines = [line for line in app_lines if line["log"] == "app"]
    assert app_lines, handler.lines
    for line in app_lines:
        assert line["request_id"] == response.headers["x-request-id"]
        assert line["trace_id"] == TRACE


# --- 9. the caller's address --------------------------------------------------------------------


def _scope(peer: tuple[str, int] | None, *forwarded: str) -> dict[str, Any]:
    return {
        "client": peer,
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }


@pytest.mark.parametrize(
    ("scope", "trusted", "expected"),
    [
        pytest.param(
            _scope(("10.0.0.5", 1234), "203.0.113.7, 10.0.0.9"),
            ["10.0.0.0/8"],
            "203.0.113.7",
            id="through-two-trusted-proxies",
        ),
        pytest.param(
            _scope(("198.51.100.1", 1234), "203.0.113.7"),
            ["10.0.0.0/8"],
            "198.51.100.1",
            id="untrusted-peer-header-ignored",
        ),
        pytest.param(
            _scope(("10.0.0.5", 1234), "1.2.3.4, 203.0.113.7"),
            ["10.0.0.0/8"],
            "203.0.113.7",
            id="forged-leftmost-ignored",
        ),
        pytest.param(
            _scope(("10.0.0.5", 1234), "1.2.3.4", "203.0.113.7, 10.0.0.9"),
            ["10.0.0.0/8"],
            "203.0.113.7",
            id="several-headers-read-in-order",
        ),
        pytest.param(
            _scope(("10.0.0.5", 1234), "203.0.113.7, not-an-ip"),
            ["10.0.0.0/8"],
            None,
            id="garbage-rightmost-untrusted",
        ),
        pytest.param(
            _scope(("10.0.0.5", 1234), "203.0.113.7:443"),
            ["10.0.0.0/8"],
            None,
            id="address-with-port-is-not-an-address",
        ),
        pytest.param(
            _scope(("10.0.0.5", 1234), "2001:DB8::1"),
            ["10.0.0.5"],
            "2001:db8::1",
            id="ipv6-normalised",
        ),
        pytest.param(
            _scope(("10.0.0.5", 1234)),
            ["10.0.0.0/8"],
            "10.0.0.5",
            id="trusted-peer-without-header",
        ),
        pytest.param(
            _scope(("10.0.0.5", 1234), "10.1.1.1, 10.0.0.9"),
            ["10.0.0.0/8"],
            "10.1.1.1",
            id="all-hops-trusted-leftmost",
        ),
        pytest.param(
            _scope(("10.0.0.5", 1234), "203.0.113.7"),
            [],
            "10.0.0.5",
            id="no-trusted-proxies",
        ),
        pytest.param(_scope(None, "203.0.113.7"), ["10.0.0.0/8"], None, id="no-peer"),
        pytest.param(
            _scope(("::ffff:10.0.0.5", 1234), "::ffff:203.0.113.7"),
            ["10.0.0.0/8"],
            "203.0.113.7",
            id="ipv4-mapped-peer-of-a-dual-stack-socket",
        ),
    ],
)
def test_client_ip(scope: dict[str, Any], trusted: list[str], expected: str | None) -> None:
    assert client_ip(scope, trusted) == expected


# --- 10. metrics --------------------------------------------------------------------------------


async def test_metrics_count_the_request_by_route_template_and_report_sessions(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    async with bff() as client:
        await client.get(FLOWS)
        metrics = (await client.get("/metrics")).text
    assert re.search(
        r'^bff_http_requests_total\{[^}]*route="' + re.escape(LIST_ROUTE) + r'"[^}]*\} 1\.0$',
        metrics,
        re.MULTILINE,
    ), metrics
    assert re.search(r"^bff_sessions_active 0\.0$", metrics, re.MULTILINE), metrics
    assert "ten_acme" not in metrics


async def test_a_sign_in_is_traced_to_the_provider_timed_and_counted_as_a_session(
    upstream: respx.MockRouter, access_log: Lines
) -> None:
    async with running_app(upstream) as harness:
        browser = harness.browser()
        start = await browser.get(LOGIN, params={"returnTo": "/"})
        before = len(harness.provider.token.calls)
        callback = await browser.get(
            harness.provider.authorize(start.headers["location"], "alice"),
            headers={"traceparent": TRACEPARENT},
        )
        assert callback.status_code == 302, callback.text
        token_calls = list(harness.provider.token.calls)[before:]
        signed_in = (await harness.client.get("/metrics")).text
        assert (await browser.api("POST", LOGOUT)).status_code == 200
        signed_out = (await harness.client.get("/metrics")).text
    assert token_calls
    children = _children(token_calls)
    assert {trace for trace, _, _ in children} == {TRACE}
    assert PARENT_SPAN not in {span for _, span, _ in children}
    timing = callback.headers["server-timing"]
    assert re.fullmatch(
        r"app;dur=\d+\.\d+, upstream;dur=0\.00, cache;desc=bypass, idp;dur=\d+\.\d+", timing
    ), timing
    (line,) = [line for line in access_log.access() if line["route"] == CALLBACK]
    assert line["trace_id"] == TRACE
    assert line["status"] == 302
    assert line["provider_ms"] > 0 and line["upstream_calls"] == 0
    assert re.search(r"^bff_sessions_active 1\.0$", signed_in, re.MULTILINE), signed_in
    assert re.search(r"^bff_sessions_active 0\.0$", signed_out, re.MULTILINE), signed_out


# --- 11. the audit trail ------------------------------------------------------------------------


def _audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_audit_events_carry_the_callers_trace_and_address(
    bff: BffFactory, upstream: respx.MockRouter, tmp_path: Path
) -> None:
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow("flow_new"), headers={"ETag": '"1"'})
    path = tmp_path / "audit.jsonl"
    settings = make_settings(audit={"sink": "file", "path": str(path)})
    async with bff(settings=settings) as client:
        created = await client.post(FLOWS, json=WRITE, headers={"traceparent": TRACEPARENT})
    async with bff(principal=BOB, settings=settings) as client:
        refused = await client.post(FLOWS, json=WRITE)
    assert (created.status_code, refused.status_code) == (201, 403)
    attempted, succeeded, denied = _audit(path)
    for event in (attempted, succeeded):
        assert event["trace_id"] == TRACE
        assert event["request_id"] == created.headers["x-request-id"]
        # httpx's ASGITransport reports the caller as 127.0.0.1.
        assert event["client_ip"] == "127.0.0.1"
    assert denied["outcome"] == "denied"
    assert HEX32.fullmatch(denied["trace_id"]) and denied["trace_id"] != TRACE
    assert denied["trace_id"] == refused.json()["traceId"]
    assert denied["client_ip"] == "127.0.0.1"


async def test_audit_client_ip_is_read_through_trusted_proxies_only(
    bff: BffFactory, upstream: respx.MockRouter, tmp_path: Path
) -> None:
    upstream.delete(f"{UP_FLOWS}/flow_1").respond(204)
    upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow("flow_1"))
    forwarded = {"X-Forwarded-For": "1.2.3.4, 203.0.113.7"}
    trusting = tmp_path / "trusting.jsonl"
    doubting = tmp_path / "doubting.jsonl"
    settings = make_settings(
        audit={"sink": "file", "path": str(trusting)}, bff={"trusted_proxies": ["127.0.0.1"]}
    )
    async with bff(settings=settings) as client:
        assert (await client.delete(f"{FLOWS}/flow_1", headers=forwarded)).status_code == 204
    settings = make_settings(audit={"sink": "file", "path": str(doubting)})
    async with bff(settings=settings) as client:
        assert (await client.delete(f"{FLOWS}/flow_1", headers=forwarded)).status_code == 204
    assert {event["client_ip"] for event in _audit(trusting)} == {"203.0.113.7"}
    assert {event["client_ip"] for event in _audit(doubting)} == {"127.0.0.1"}


def test_control_characters_in_an_app_message_are_shown_not_obeyed() -> None:
    record = logging.getLogger("bff.test").makeRecord(
        "bff.test", logging.WARNING, __file__, 1, "got %s", ("\x1b[2Jx\x85y\u2028z\x0b",), None
    )
    text = TextFormatter().format(record)
    assert text.endswith(r"got \x1b[2Jx\x85y\u2028z\x0b")


def test_a_traceback_in_text_is_indented_so_no_line_passes_for_a_record() -> None:
    try:
        raise ValueError("caller sent\n2026-12-02T00:00:00.000Z INFO    forged")
    except ValueError:
        record = logging.getLogger("bff.test").makeRecord(
            "bff.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    first, *rest = TextFormatter().format(record).split("\n")
    assert first.endswith("ERROR   bff.test: failed")
    assert rest and all(line.startswith("    ") for line in rest)


async def test_two_traceparent_fields_make_the_trace_context_invalid(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    async with bff() as client:
        response = await client.get(
            FLOWS, headers=[("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)]
        )
    assert response.status_code == 200
    children = _children(upstream.calls)
    assert children and {trace for trace, _, _ in children} != {TRACE}
    assert {flags for _, _, flags in children} == {"00"}


async def test_tracestate_fields_are_forwarded_as_one_list(
    bff: BffFactory, upstream: respx.MockRouter
) -> None:
    upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    async with bff() as client:
        response = await client.get(
            FLOWS,
            headers=[
                ("traceparent", TRACEPARENT),
                ("tracestate", "rojo=00f067aa0ba902b7"),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
        )
    assert response.status_code == 200
    states = {call.request.headers["tracestate"] for call in upstream.calls}
    assert states == {"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"}


@pytest.mark.parametrize("form", ["json", "text"])
def test_configured_logging_writes_access_lines_and_records_to_stdout(form: str) -> None:
    # In a process of its own: configure() sets up the whole process's logging.
    script = f"""
import logging
from bff import logs
logs.configure({form!r}, "info")
logs.access({{"request_id": "req_0123456789abcdef", "trace_id": "{TRACE}", "method": "GET",
    "route": "/healthz", "status": 200, "duration_ms": 1.5, "upstream_ms": 0.0,
    "upstream_calls": 0, "retries": 0, "provider_ms": 0.0, "cache": "bypass",
    "tenant_id": None, "cluster_id": None, "sub": "a\\nb"}})
logging.getLogger("uvicorn.error").info("started")
logging.getLogger("uvicorn.access").info("uvicorn's own access line")
logging.getLogger("httpx").info("request sent")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 2, lines
    if form == "json":
        access, record = (json.loads(line) for line in lines)
        assert access["log"] == "access" and access["sub"] == "a\nb"
        assert record["log"] == "app" and record["logger"] == "uvicorn.error"
    else:
        assert lines[0].endswith(f'sub="a\\nb" request_id=req_0123456789abcdef trace_id={TRACE}')
        assert lines[1].endswith("INFO    uvicorn.error: started")


async def test_the_edge_drops_headers_that_advertise_the_stack_and_adds_its_own() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"server", b"uvicorn"),
                    (b"x-powered-by", b"starlette"),
                    (b"set-cookie2", b"old=1"),
                    (b"content-type", b"text/plain"),
                    (b"cache-control", b"public, max-age=60"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    edge = EdgeMiddleware(app, metrics=Metrics())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(edge), base_url="http://bff.test"
    ) as client:
        response = await client.get("/somewhere")
    assert response.text == "ok"
    for name in ("server", "x-powered-by", "set-cookie2"):
        assert name not in response.headers
    assert response.headers["content-type"] == "text/plain"
    assert response.headers["cache-control"] == "public, max-age=60", "the app's own is kept"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-request-id"].startswith("req_")


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_access_lines_of_one_loop_turn_go_out_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = _CountingStream()
    monkeypatch.setattr(sys, "stdout", stream)
    write = logs._StdoutAccess(lambda fields, created: json.dumps(fields))
    for n in range(3):
        write({"n": n})
    assert stream.getvalue() == "", "held until the loop's turn ends"
    await asyncio.sleep(0)
    assert stream.getvalue().splitlines() == ['{"n": 0}', '{"n": 1}', '{"n": 2}']
    assert stream.writes == 1
    write({"n": 3})
    await asyncio.sleep(0)
    assert stream.getvalue().splitlines()[-1] == '{"n": 3}'


def test_without_an_event_loop_an_access_line_is_written_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = _CountingStream()
    monkeypatch.setattr(sys, "stdout", stream)
    logs._StdoutAccess(lambda fields, created: "line")({})
    assert stream.getvalue() == "line\n"
