"""OpenTelemetry spans, exported over OTLP/HTTP to a real receiver on loopback.

The receiver decodes what the exporter really sends (protobuf, maybe compressed), so these tests
check the spans as a collector sees them: one server span per request, one client span per
upstream attempt, and the ``traceparent`` the upstream receives naming the client span.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from bff.auth import static_authenticator
from bff.settings import Settings
from tests.support.gateway import (
    ALICE,
    FLOWS,
    UP_FLOWS,
    UPSTREAM,
    in_process,
    make_settings,
    upstream_flow,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ROUTE = "/api/bff/v1/tenants/{tid}/clusters/{cid}/delivery-flows"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SERVICE = "flows-bff-test"
SERVER = ProtoSpan.SpanKind.SPAN_KIND_SERVER
CLIENT = ProtoSpan.SpanKind.SPAN_KIND_CLIENT
DEADLINE_SECONDS = 10.0


# --- the OTLP/HTTP receiver -----------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    start: int
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which is not None else None


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


class Receiver:
    """Spans received at ``POST /v1/traces``; anything else the exporter sends is an error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.errors: list[str] = []
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def accept(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received = [
            ReceivedSpan(
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                name=span.name,
                kind=span.kind,
                attributes=_attributes(span.attributes),
                start=span.start_time_unix_nano,
                resource=_attributes(resource_spans.resource.attributes),
            )
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._lock:
            self._spans.extend(received)

    def error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    async def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], timeout: float = DEADLINE_SECONDS
    ) -> list[ReceivedSpan]:
        """The spans once ``done`` holds for them; fails at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                pytest.fail(f"spans not received in {timeout}s: {spans!r}, errors {self.errors!r}")
            await asyncio.sleep(0.01)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class OtlpHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/traces":
                self._answer(404, b"", f"POST to {self.path}")
                return
            content_type = self.headers.get("Content-Type", "")
            if content_type != "application/x-protobuf":
                self._answer(415, b"", f"Content-Type {content_type!r}")
                return
            encoding = (self.headers.get("Content-Encoding") or "identity").lower()
            try:
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding != "identity":
                    raise ValueError(f"Content-Encoding {encoding!r}")
                receiver.accept(body)
            except Exception as exc:  # a bad export fails the test, not the receiver
                self._answer(400, b"", f"undecodable export: {exc!r}")
                return
            answer = ExportTraceServiceResponse().SerializeToString()
            self._answer(200, answer, None)

        def _answer(self, status: int, body: bytes, error: str | None) -> None:
            if error is not None:
                receiver.error(error)
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return OtlpHandler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received))
    server.daemon_threads = True
    received.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=DEADLINE_SECONDS)
    assert received.errors == []


# --- helpers --------------------------------------------------------------------------------


def traced_settings(receiver: Receiver) -> Settings:
    return make_settings(tracing={"otlp_endpoint": receiver.endpoint, "service_name": SERVICE})


def transport(router: respx.MockRouter) -> httpx.AsyncBaseTransport:
    return httpx.MockTransport(router.async_handler)


def split_traceparent(value: str) -> tuple[str, str, str, str]:
    version, trace_id, parent_id, flags = value.split("-")
    return version, trace_id, parent_id, flags


def of_kind(spans: list[ReceivedSpan], kind: int, trace_id: str) -> list[ReceivedSpan]:
    return sorted(
        (span for span in spans if span.kind == kind and span.trace_id == trace_id),
        key=lambda span: span.start,
    )


def has_server_span(trace_id: str) -> Callable[[list[ReceivedSpan]], bool]:
    # Client spans end, and are queued for export, before the server span of their request.
    return lambda spans: bool(of_kind(spans, SERVER, trace_id))


def list_flows(router: respx.MockRouter) -> respx.Route:
    return router.get(UP_FLOWS).respond(
        json={"delivery_flows": [upstream_flow()], "next_cursor": None}
    )


async def traced_get(
    receiver: Receiver, upstream: respx.MockRouter, headers: dict[str, str]
) -> httpx.Response:
    """The flow list as alice, through a gateway exporting to ``receiver``; asserted 200."""
    async with in_process(
        transport(upstream),
        authenticators=[static_authenticator(ALICE)],
        settings=traced_settings(receiver),
    ) as running:
        response = await running.client.get(FLOWS, headers=headers)
    assert response.status_code == 200, response.text
    return response


# --- the tests ------------------------------------------------------------------------------


async def test_spans_of_a_request_reach_the_collector(
    receiver: Receiver, upstream: respx.MockRouter
) -> None:
    flows = list_flows(upstream)
    await traced_get(receiver, upstream, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert flows.call_count == 1
    sent = flows.calls.last.request.headers["traceparent"]

    spans = await receiver.wait_for(has_server_span(TRACE_ID))

    (server,) = of_kind(spans, SERVER, TRACE_ID)
    assert server.resource["service.name"] == SERVICE
    assert server.parent_span_id == PARENT_ID
    assert server.name == f"GET {ROUTE}"
    assert server.attributes["http.request.method"] == "GET"
    assert server.attributes["http.route"] == ROUTE
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["url.path"] == FLOWS

    clients = of_kind(spans, CLIENT, TRACE_ID)
    calls = list(upstream.calls)
    assert len(clients) == len(calls) >= 2, "the flows list and at least one catalog lookup"
    assert [span for span in spans if span.trace_id != TRACE_ID] == []
    called = sorted(str(call.request.url.copy_with(query=None)) for call in calls)
    assert sorted(span.attributes["url.full"] for span in clients) == called
    for span in clients:
        assert span.resource["service.name"] == SERVICE
        assert span.parent_span_id == server.span_id
        assert span.name == "GET"
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["server.address"] == "upstream.test"
        assert span.attributes["server.port"] == 80
        assert span.attributes["peer.service"] == "upstream"
        assert span.attributes["http.response.status_code"] == 200
        assert "http.request.resend_count" not in span.attributes

    version, trace_id, parent_id, flags = split_traceparent(sent)
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    (flows_span,) = [span for span in clients if span.span_id == parent_id]
    assert flows_span.attributes["url.full"] == UPSTREAM + UP_FLOWS
    # Every call, not only the list, names its own client span as the upstream's parent.
    parents = {split_traceparent(call.request.headers["traceparent"])[2] for call in calls}
    assert parents == {span.span_id for span in clients}


async def test_a_retried_upstream_call_is_one_client_span_per_attempt(
    receiver: Receiver, upstream: respx.MockRouter
) -> None:
    flows = upstream.get(UP_FLOWS).mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(200, json={"delivery_flows": [upstream_flow()], "next_cursor": None}),
        ]
    )
    await traced_get(receiver, upstream, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert flows.call_count == 2

    spans = await receiver.wait_for(has_server_span(TRACE_ID))

    (server,) = of_kind(spans, SERVER, TRACE_ID)
    attempts = [
        span
        for span in of_kind(spans, CLIENT, TRACE_ID)
        if span.attributes["url.full"] == UPSTREAM + UP_FLOWS
    ]
    assert len(attempts) == 2
    first, second = attempts
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["error.type"] == "503"
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["http.request.resend_count"] == 1
    assert "error.type" not in second.attributes
    assert {first.parent_span_id, second.parent_span_id} == {server.span_id}
    sent = [split_traceparent(call.request.headers["traceparent"])[2] for call in flows.calls]
    assert sent == [first.span_id, second.span_id]


@pytest.mark.parametrize(
    "traceparent",
    [
        None,
        "not-a-traceparent",
        f"00-{'0' * 32}-{PARENT_ID}-01",  # the all-zero trace id is invalid
        f"00-{TRACE_ID}-{'0' * 16}-01",  # so is the all-zero parent id
    ],
)
async def test_without_a_valid_traceparent_the_request_starts_a_trace(
    receiver: Receiver, upstream: respx.MockRouter, traceparent: str | None
) -> None:
    flows = list_flows(upstream)
    headers = {"traceparent": traceparent} if traceparent is not None else {}
    response = await traced_get(receiver, upstream, headers)
    assert "server-timing" in response.headers
    _, trace_id, parent_id, flags = split_traceparent(
        flows.calls.last.request.headers["traceparent"]
    )
    assert trace_id not in {TRACE_ID, "0" * 32}
    assert flags == "01", "the gateway records this trace, so it is sampled downstream"

    spans = await receiver.wait_for(has_server_span(trace_id))

    (server,) = [span for span in spans if span.kind == SERVER]
    assert server.trace_id == trace_id
    assert server.parent_span_id == ""
    assert server.name == f"GET {ROUTE}"
    clients = of_kind(spans, CLIENT, trace_id)
    assert parent_id in {span.span_id for span in clients}
    assert {span.parent_span_id for span in clients} == {server.span_id}


async def test_an_unsampled_caller_trace_is_propagated_and_not_exported(
    receiver: Receiver, upstream: respx.MockRouter
) -> None:
    flows = list_flows(upstream)
    await traced_get(receiver, upstream, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"})
    version, trace_id, parent_id, flags = split_traceparent(
        flows.calls.last.request.headers["traceparent"]
    )
    assert (version, trace_id, flags) == ("00", TRACE_ID, "00")
    assert parent_id not in {PARENT_ID, "0" * 16}
    # The lifespan's end exported everything synchronously: there is nothing left to wait for.
    assert receiver.spans() == []


_SCRIPT = """
import asyncio, builtins, importlib.abc, importlib.util, json, sys

TRACING = json.loads(sys.argv[1])
BLOCK = sys.argv[2] == "block"
IMPORTERS = set()
_import = builtins.__import__


def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    # Every import statement, even of a module already loaded, names its importer here.
    importer = (globals or {}).get("__name__", "?")
    target = name
    if level:
        target = importlib.util.resolve_name("." * level + name, globals["__package__"])
    watched = target.split(".")[0] == "opentelemetry" or target == "bff.otel"
    if watched and importer.split(".")[0] != "opentelemetry":
        IMPORTERS.add(importer)
    return _import(name, globals, locals, fromlist, level)


class NoOpenTelemetry(importlib.abc.MetaPathFinder):
    # As if the otel extra were not installed.
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


builtins.__import__ = recording_import
if BLOCK:
    sys.meta_path.insert(0, NoOpenTelemetry())

import httpx

from bff import Principal, create_app
from bff.auth import static_authenticator
from bff.settings import settings_from_mapping

FLOWS = "/api/bff/v1/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flows"
CLUSTER = {"id": "plane_dev_us_east_1", "name": "Dev", "region": "us-east-1", "status": "active"}
ANSWERS = {
    "/v1/tenants/ten_acme/clusters": {"clusters": [CLUSTER], "next_cursor": None},
    "/v1/tenants/ten_acme/delivery-flows": {"delivery_flows": [], "next_cursor": None},
    "/v1/tenants/ten_acme/ingesters": {"ingesters": [], "next_cursor": None},
    "/v1/tenants/ten_acme/destinations": {"destinations": [], "next_cursor": None},
}


def backend(request):
    answer = ANSWERS.get(request.url.path)
    return httpx.Response(200, json=answer) if answer is not None else httpx.Response(404)


async def main():
    settings = settings_from_mapping(
        {
            "bff": {"public_origin": "http://127.0.0.1:8000", "rate_limit_per_minute": 0},
            "upstream": {"base_url": "http://upstream.test", "credential": "relay"},
            "oidc": {"client_secret": "test-client-secret"},
            "tracing": TRACING,
        }
    )
    alice = Principal(
        subject="alice",
        tenants={"ten_acme": frozenset({"read:delivery-flows"})},
        via="static",
        access_token="zen_key_dev_acme_ro",
    )
    app = create_app(
        settings,
        authenticators=[static_authenticator(alice)],
        upstream_transport=httpx.MockTransport(backend),
        idp_transport=httpx.MockTransport(lambda request: httpx.Response(503)),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://127.0.0.1:8000"
        ) as client,
    ):
        health = await client.get("/healthz")
        flows = await client.get(FLOWS)
    return [health.status_code, flows.status_code]


statuses = asyncio.run(main())
print(
    json.dumps(
        {
            "statuses": statuses,
            "modules": sorted(name for name in sys.modules if name.startswith("opentelemetry")),
            "bff.otel": "bff.otel" in sys.modules,
            "importers": sorted(IMPORTERS),
        }
    )
)
"""

# What bff.otel loads and no dependency of the gateway does.
TRACING_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http")


def run_app_in_a_fresh_interpreter(
    tracing: dict[str, str], *, opentelemetry_installed: bool = True
) -> dict[str, Any]:
    """Serve ``/healthz`` and the flows list from a new interpreter; what it imported."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    mode = "allow" if opentelemetry_installed else "block"
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(tracing), mode],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["statuses"] == [200, 200]
    return result


def test_without_an_endpoint_the_gateway_imports_nothing_of_opentelemetry() -> None:
    # redis >= 8 imports opentelemetry (metrics) itself when it is installed, so the check is on
    # who imports it: no module of the gateway, and nothing that only tracing needs is loaded.
    result = run_app_in_a_fresh_interpreter({})
    ours = [
        name for name in result["importers"] if name.split(".")[0] in {"bff", "upstream_client"}
    ]
    assert ours == []
    assert result["bff.otel"] is False
    assert [name for name in result["modules"] if name.startswith(TRACING_MODULES)] == []


def test_without_an_endpoint_the_gateway_runs_without_opentelemetry_installed() -> None:
    result = run_app_in_a_fresh_interpreter({}, opentelemetry_installed=False)
    assert result["modules"] == []
    assert result["bff.otel"] is False


def test_with_an_endpoint_the_same_script_sees_the_gateway_import_it(receiver: Receiver) -> None:
    """The control: the checks above would see the imports if the gateway made them."""
    result = run_app_in_a_fresh_interpreter(
        {"otlp_endpoint": receiver.endpoint, "service_name": SERVICE}
    )
    assert "bff.otel" in result["importers"]
    assert result["bff.otel"] is True
    assert {"opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http"} <= set(
        result["modules"]
    )
    # The lifespan's end flushed the exporter before the interpreter exited.
    servers = [span for span in receiver.spans() if span.kind == SERVER]
    assert sorted(span.name for span in servers) == [f"GET {ROUTE}", "GET /healthz"]
    assert {span.resource["service.name"] for span in servers} == {SERVICE}
