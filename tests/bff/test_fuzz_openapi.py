"""Generated requests against the BFF, over the real sandbox, answered only as the document says.

Schemathesis turns ``bff/openapi.json`` into Hypothesis strategies: valid requests (positive) and
requests that break one rule of the document (negative). Each example then mostly aims at known
ids and endpoints (so requests reach the sandbox and can succeed), sometimes at hostile path ids,
and may get up to two twists: entity tags of a real flow, reused idempotency keys, other media
types, oversized bodies, taken names, unknown query parameters and numbers ``int()`` cannot read.
Every answer must be no 5xx, a status the operation documents, a body valid against the schema
documented for that status and media type, with the documented headers, and leak nothing. Runs
are derandomized and bounded, so the file is quick and repeatable.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import sandbox
from bff.auth import static_authenticator
from tests.support.gateway import ALICE, API, BFF, FLOWS, in_process, make_settings
from tests.support.openapi import DOCUMENT, assert_conforms

DEV_CONFIG = Path(__file__).resolve().parents[2] / "config" / "dev.toml"
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
SEEDS = [
    {
        "name": "stripe-to-orders",
        "sourceId": "ing_stripe_prod",
        "destinationId": "dest_orders_api",
        "retryPolicy": {"maxAttempts": 5, "backoffSeconds": 30},
    },
    {"name": "github-to-billing", "sourceId": "ing_github_ci", "destinationId": "dest_billing_svc"},
]
# Path segments as sent on the wire (schemathesis has already percent-encoded what it generated):
# ids a URL layer could reinterpret, too long or foreign ones. None may reach the sandbox.
HOSTILE_IDS = [
    "..",
    "%2e%2e",
    "a%2F..%2Fb",
    "ten_acme%00",
    "ten%20acme",
    "ten_acm%C3%A9",
    "flow_1.json",
    "x" * 65,
    "-leading-dash",
    "_leading_underscore",
    "ten_acme;x=1",
    "%25",
]
# Endpoints of the sandbox's dev data: the first two of each are in plane_dev_us_east_1.
SOURCES = ["ing_stripe_prod", "ing_github_ci", "ing_shopify_eu", "ing_globex_orders"]
DESTINATIONS = ["dest_orders_api", "dest_billing_svc", "dest_eu_warehouse"]
ENTITY_TAGS = ['"nope"', "*", 'W/"1"', '"1", "2"', "not-a-tag", ""]
CONTENT_TYPES = [
    "text/plain",
    "application/json; charset=latin-1",
    "application/merge-patch+json",
    "application/x-www-form-urlencoded",
    "",
]
# A few keys that come back, so that replays (same request) and reuse (another request) happen.
IDEMPOTENCY_KEYS = ["fuzz-key-1", "fuzz-key-2", "not a key", ""]
# What an example may change on top of what schemathesis generated, at most two at a time.
TWISTS = [
    "If-Match",
    "If-None-Match",
    "Idempotency-Key",
    "Content-Type",
    "Content-Length",
    "limit",
    "query",
    "taken name",
    "oversized",
]
# Numbers int() or isdigit() get wrong: too many digits, non-ASCII digits, signs, hex.
HOSTILE_NUMBERS = ["1" * 4301, "0" * 4400 + "7", "\u00b2", "\u0663", "-0", "+5", "1e2", "0x10"]
QUERY = st.dictionaries(
    st.sampled_from(["limit", "cursor", "Limit", "expand", "x[]", "__proto__", ""]),
    st.sampled_from(HOSTILE_NUMBERS) | st.text(max_size=8),
    min_size=1,
    max_size=2,
)
MODES = [GenerationMode.POSITIVE] * 3 + [GenerationMode.NEGATIVE] * 2
# What must never reach the browser: the relayed credential, stack traces, upstream field names.
LEAKS = [ALICE.access_token or "", "Traceback", "source_id", "destination_id", "retry_policy"]
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    # The BFF and the sandbox behind it are one fixture shared by every example on purpose:
    # starting them per example would cost more than the requests.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Stack:
    """The BFF over the in-process sandbox, with real flows to aim generated requests at."""

    client: httpx.AsyncClient
    flow_ids: list[str]
    etag: str
    statuses: set[int] = field(default_factory=set)


@pytest.fixture
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """The stack for one operation's run; afterwards, the run must have got its ``reached``."""
    backend = sandbox.create_app(sandbox.load_settings(DEV_CONFIG, db=":memory:"))
    async with (
        backend.router.lifespan_context(backend),
        in_process(
            httpx.ASGITransport(backend),
            authenticators=[static_authenticator(ALICE)],
            settings=make_settings(upstream={"max_attempts": 1}),
        ) as running,
    ):
        created = [await running.client.post(FLOWS, json=body) for body in SEEDS]
        assert [c.status_code for c in created] == [201, 201]
        ids = [c.json()["id"] for c in created]
        stack = Stack(running.client, ids, created[0].headers["etag"])
        yield stack
    reached = request.node.callspec.params["reached"]
    assert reached <= stack.statuses, f"the fuzz run never got {reached - stack.statuses}"


@cache
def cases(path: str, method: str, mode: GenerationMode) -> Any:
    return SCHEMA[path][method].as_strategy(mode)


def sometimes(data: st.DataObject, label: str, odds: int = 4) -> bool:
    """True about once in ``odds`` draws; False is the simpler value Hypothesis shrinks to."""
    return data.draw(st.integers(0, odds - 1), label=label) == odds - 1


def aim(data: st.DataObject, case: Any, stack: Stack) -> None:
    """Mostly known ids and endpoints, so requests get past the guards and can succeed."""
    known = {
        "tid": ["ten_acme"] * 5 + ["ten_globex"],
        "cid": ["plane_dev_us_east_1"] * 4 + ["plane_dev_eu_west_1", "plane_x"],
        "fid": [stack.flow_ids[0]] * 3 + [stack.flow_ids[1], "flow_missing"],
    }
    for name, values in known.items():
        if name not in (case.path_parameters or {}):
            continue
        how = data.draw(st.sampled_from(["known"] * 6 + ["generated", "hostile"]), label=name)
        if how == "known":
            case.path_parameters[name] = data.draw(st.sampled_from(values), label=name)
        elif how == "hostile":
            case.path_parameters[name] = data.draw(st.sampled_from(HOSTILE_IDS), label=name)
    is_flow = case.media_type == "application/json" and isinstance(case.body, dict)
    if is_flow and not sometimes(data, "generated endpoints", 3):
        # Mostly endpoints of this cluster; the others are of another cluster or tenant.
        weighted = st.sampled_from([0, 0, 0, 1, 1, 2, 3])
        case.body["sourceId"] = SOURCES[data.draw(weighted, label="sourceId")]
        case.body["destinationId"] = DESTINATIONS[data.draw(weighted, label="dest") % 3]


def twist(data: st.DataObject, name: str, arguments: dict[str, Any], stack: Stack) -> None:
    """Change one thing a client could get wrong, or that needs state, in the request."""
    headers, params = arguments["headers"], arguments["params"]
    draw = partial(data.draw, label=name)
    if name in ("If-Match", "If-None-Match"):
        headers[name] = draw(st.sampled_from([stack.etag, *ENTITY_TAGS]))
    elif name == "Idempotency-Key":
        headers[name] = draw(st.sampled_from(IDEMPOTENCY_KEYS))
    elif name == "Content-Type" and "content" in arguments:
        headers[name] = draw(st.sampled_from(CONTENT_TYPES))
    elif name == "Content-Length" and "content" in arguments:
        headers[name] = draw(st.sampled_from(HOSTILE_NUMBERS))
    elif name == "limit":
        params[name] = draw(st.sampled_from(HOSTILE_NUMBERS))
    elif name == "query":
        arguments["params"] = {**params, **draw(QUERY)}
    elif name == "taken name" and isinstance(body := arguments.get("json"), dict):
        # The second seed's name first: giving it to the first flow is a conflict too.
        body["name"] = draw(st.sampled_from([seed["name"] for seed in reversed(SEEDS)]))
    elif name == "oversized" and isinstance(body := arguments.get("json"), dict):
        body["name"] = "x" * 70_000


def httpx_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Schemathesis' requests-style arguments as httpx arguments (cookies in the header)."""
    headers = {name: str(value) for name, value in kwargs["headers"].items()}
    if kwargs.get("cookies"):
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in kwargs["cookies"].items())
    arguments: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "params": kwargs.get("params") or {},
    }
    if "json" in kwargs:
        arguments["json"] = kwargs["json"]
        arguments["content"] = b""  # encoded once every twist is applied
    elif isinstance(kwargs.get("data"), dict):
        arguments["data"] = kwargs["data"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        arguments["content"] = data.encode() if isinstance(data, str) else data
    arguments["headers"] = headers
    return arguments


def on_the_wire(value: str) -> bytes:
    """A header value as bytes: Latin-1 as servers read it, else UTF-8 (httpx sends only ASCII)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


async def exchange(
    data: st.DataObject, stack: Stack, path: str, method: str
) -> tuple[Any, httpx.Response]:
    """Draw one request for the operation, send it, and return the case with its response."""
    mode = data.draw(st.sampled_from(MODES), label="mode")
    case = data.draw(cases(path, method, mode), label="case")
    aim(data, case, stack)
    arguments = httpx_arguments(case.as_transport_kwargs(base_url=BFF + API))
    for name in sorted(data.draw(st.sets(st.sampled_from(TWISTS), max_size=2), label="twists")):
        twist(data, name, arguments, stack)
    if "json" in arguments:
        arguments["content"] = json.dumps(arguments.pop("json")).encode()
    headers = arguments["headers"]
    arguments["headers"] = {name: on_the_wire(value) for name, value in headers.items()}
    response = await stack.client.request(**arguments)
    stack.statuses.add(response.status_code)
    return case, response


# Each operation, with answers any run of it reaches: a run that got none of them behind the
# guards tested nothing. Rarer answers (304, 409, 412, 413, 415, 422) come too, but not always.
OPERATIONS = [
    ("/tenants/{tid}/clusters/{cid}/delivery-flows", "GET", {200, 400, 404}),
    ("/tenants/{tid}/clusters/{cid}/delivery-flows", "POST", {201, 400, 409}),
    ("/tenants/{tid}/clusters/{cid}/delivery-flows/{fid}", "GET", {200, 404}),
    ("/tenants/{tid}/clusters/{cid}/delivery-flows/{fid}", "PUT", {200, 400, 404}),
    ("/tenants/{tid}/clusters/{cid}/delivery-flows/{fid}", "DELETE", {204, 404}),
    ("/tenants/{tid}/clusters", "GET", {200, 403}),
    ("/tenants/{tid}/clusters/{cid}/delivery-flow-options", "GET", {200, 404}),
    ("/openapi.json", "GET", {200}),
    ("/auth/session", "GET", {401}),
    # Signing in needs the identity provider, which these app tests never reach.
    ("/auth/login", "GET", {503}),
    ("/auth/callback", "GET", {400}),
    ("/auth/logout", "POST", {200}),
    ("/auth/backchannel-logout", "POST", {400}),
    ("/.well-known/jwks.json", "GET", {200}),
]
NEEDS_THE_PROVIDER = {
    ("/auth/login", "GET"),
    ("/auth/callback", "GET"),
    ("/auth/backchannel-logout", "POST"),
}


@pytest.mark.parametrize(
    ("path", "method", "reached"), OPERATIONS, ids=[f"{m} {p}" for p, m, _ in OPERATIONS]
)
@FUZZ
@given(data=st.data())
async def test_generated_requests_are_answered_as_documented(
    stack: Stack, path: str, method: str, reached: set[int], data: st.DataObject
) -> None:
    case, response = await exchange(data, stack, path, method)
    if (path, method) in NEEDS_THE_PROVIDER:
        # Its documented 503 is the truth here; a 500 is still a failure.
        case.validate_response(response, checks=[c for c in CHECKS if c is not not_a_server_error])
        assert response.status_code != 500
    else:
        case.validate_response(response, checks=CHECKS)
    assert_conforms(path, method.lower(), response)
    for leak in LEAKS:
        assert leak not in response.text, (leak, response.text)
    assert "server" not in response.headers
    if path.startswith("/tenants/"):
        assert "set-cookie" not in response.headers  # the BFF sets none; the sandbox's stay out
