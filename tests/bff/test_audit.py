"""The audit trail: write-ahead events for every write, chained, and checked by ``bff audit``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import respx

from bff.audit import Actor as AuditActor
from bff.audit import AuditEvent, AuditLog, FileSink, verify
from bff.auth import Principal
from bff.cli import main
from tests.support.clock import FakeClock
from tests.support.gateway import (
    ALICE,
    BOB,
    CALLBACK,
    CAROL,
    FLOWS,
    LOGOUT,
    UP_FLOWS,
    BffFactory,
    make_settings,
    upstream_flow,
)
from tests.support.provider import CLIENT_SECRET, ISSUER, USERS, FakeProvider
from tests.support.signin import auth_settings, running_app

SCHEMA = json.loads((Path(__file__).parents[2] / "bff" / "audit.schema.json").read_text())
WRITE = {"name": "stripe-to-app", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"}


def _events(path: Path) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in path.read_text().splitlines()]
    for event in events:
        jsonschema.validate(event, SCHEMA)
    return events


@pytest.fixture
def audit_file(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.jsonl"


def _settings(audit_file: Path) -> Any:
    return make_settings(audit={"sink": "file", "path": str(audit_file)})


async def test_create_update_delete_each_write_an_attempt_then_its_outcome(
    bff: BffFactory, upstream: respx.MockRouter, audit_file: Path
) -> None:
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow("flow_new"), headers={"ETag": '"1"'})
    upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow("flow_1"))
    upstream.put(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow("flow_1", name="renamed"))
    upstream.delete(f"{UP_FLOWS}/flow_1").respond(204)
    async with bff(settings=_settings(audit_file)) as client:
        created = await client.post(FLOWS, json=WRITE, headers={"Idempotency-Key": "key-1"})
        updated = await client.put(
            f"{FLOWS}/flow_1", json={**WRITE, "name": "renamed"}, headers={"User-Agent": "ua"}
        )
        deleted = await client.delete(f"{FLOWS}/flow_1")
        await client.get(FLOWS.rsplit("/", 1)[0] + "/delivery-flow-options")
        metrics = (await client.get("/metrics")).text
    written = 'bff_audit_events_total{event="delivery_flow.%s",outcome="%s",reason=""} 1.0'
    for event in ("create", "update", "delete"):
        for outcome in ("attempted", "succeeded"):
            assert written % (event, outcome) in metrics
    assert [created.status_code, updated.status_code, deleted.status_code] == [201, 200, 204]

    events = _events(audit_file)
    assert [(e["event"], e["outcome"], e["status"]) for e in events] == [
        ("delivery_flow.create", "attempted", None),
        ("delivery_flow.create", "succeeded", 201),
        ("delivery_flow.update", "attempted", None),
        ("delivery_flow.update", "succeeded", 200),
        ("delivery_flow.delete", "attempted", None),
        ("delivery_flow.delete", "succeeded", 204),
    ]
    create_attempt, create_done = events[0], events[1]
    assert create_attempt["audit_id"] == create_done["audit_id"] != events[2]["audit_id"]
    assert create_attempt["flow_id"] is None and create_done["flow_id"] == "flow_new"
    assert create_attempt["idempotency_key"] == "key-1"
    assert create_attempt["actor"] == {"iss": None, "sub": ALICE.subject, "auth": "static"}
    assert create_attempt["request_id"] == created.headers["x-request-id"]
    assert (create_attempt["tenant_id"], create_attempt["cluster_id"]) == (
        "ten_acme",
        "plane_dev_us_east_1",
    )
    assert events[2]["changes"] == ["name"] and events[2]["user_agent"] == "ua"
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert verify([str(audit_file)]) == (6, None)


@pytest.mark.parametrize(("status", "reason"), [(409, "conflict"), (412, "precondition-failed")])
async def test_a_write_the_upstream_refuses_is_audited_as_failed(
    bff: BffFactory, upstream: respx.MockRouter, audit_file: Path, status: int, reason: str
) -> None:
    upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow("flow_1"))
    upstream.put(f"{UP_FLOWS}/flow_1").respond(
        status,
        json={"type": "x", "title": "t", "status": status, "detail": "no"},
        headers={"Content-Type": "application/problem+json"},
    )
    async with bff(settings=_settings(audit_file)) as client:
        response = await client.put(f"{FLOWS}/flow_1", json=WRITE, headers={"If-Match": '"1"'})
    assert response.status_code == status
    attempted, failed = _events(audit_file)
    assert (attempted["outcome"], failed["outcome"]) == ("attempted", "failed")
    assert (failed["status"], failed["reason"]) == (status, reason)


async def test_an_unavailable_upstream_is_audited_as_failed_with_503(
    bff: BffFactory, upstream: respx.MockRouter, audit_file: Path
) -> None:
    upstream.post(UP_FLOWS).respond(503, headers={"Retry-After": "1"})
    async with bff(settings=_settings(audit_file)) as client:
        response = await client.post(FLOWS, json=WRITE)
    assert response.status_code == 503
    failed = _events(audit_file)[-1]
    assert (failed["outcome"], failed["status"], failed["reason"]) == (
        "failed",
        503,
        "upstream-unavailable",
    )


async def test_reads_are_not_audited(
    bff: BffFactory, upstream: respx.MockRouter, audit_file: Path
) -> None:
    upstream.get(UP_FLOWS).respond(json={"delivery_flows": [], "next_cursor": None})
    upstream.get(f"{UP_FLOWS}/flow_1").respond(json=upstream_flow("flow_1"))
    async with bff(settings=_settings(audit_file)) as client:
        assert (await client.get(FLOWS)).status_code == 200
        assert (await client.get(f"{FLOWS}/flow_1")).status_code == 200
    assert not audit_file.exists()


async def test_no_audit_no_write_an_unwritable_sink_refuses_before_the_upstream(
    bff: BffFactory, upstream: respx.MockRouter, tmp_path: Path
) -> None:
    route = upstream.post(UP_FLOWS).respond(201, json=upstream_flow("flow_new"))
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the audit directory should be")
    settings = make_settings(audit={"sink": "file", "path": str(blocked / "audit.jsonl")})
    async with bff(settings=settings) as client:
        response = await client.post(FLOWS, json=WRITE)
        metrics = (await client.get("/metrics")).text
    assert 'bff_audit_failures_total{event="delivery_flow.create"} 1.0' in metrics
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/audit-unavailable")
    assert "Traceback" not in response.text
    assert route.call_count == 0


@pytest.mark.parametrize(
    ("principal", "url", "body", "reason"),
    [
        (BOB, FLOWS, WRITE, "insufficient-scope"),
        (CAROL, FLOWS, WRITE, "tenant-forbidden"),
        (ALICE, FLOWS, {"name": ""}, "validation-error"),
    ],
    ids=["scope", "tenant", "validation"],
)
async def test_a_refused_write_is_audited_as_denied_and_never_forwarded(
    bff: BffFactory,
    upstream: respx.MockRouter,
    audit_file: Path,
    principal: Principal,
    url: str,
    body: dict[str, Any],
    reason: str,
) -> None:
    route = upstream.post(UP_FLOWS).respond(201, json=upstream_flow("flow_new"))
    async with bff(principal=principal, settings=_settings(audit_file)) as client:
        response = await client.post(url, json=body)
    assert response.json()["type"].endswith(reason)
    (denied,) = _events(audit_file)
    assert (denied["event"], denied["outcome"], denied["reason"]) == (
        "delivery_flow.create",
        "denied",
        reason,
    )
    assert denied["status"] == response.status_code
    assert denied["actor"]["sub"] == principal.subject
    assert route.call_count == 0


async def test_a_cross_origin_write_with_a_session_cookie_is_audited_as_denied(
    upstream: respx.MockRouter, audit_file: Path
) -> None:
    route = upstream.delete(f"{UP_FLOWS}/flow_1").respond(204)
    settings = auth_settings(audit={"sink": "file", "path": str(audit_file)})
    async with running_app(upstream, settings=settings) as harness:
        browser = harness.browser()
        await harness.login(browser)
        response = await browser.api(
            "DELETE", f"{FLOWS}/flow_1", headers={"Origin": "https://evil.example"}
        )
    assert response.status_code == 403
    (denied,) = [e for e in _events(audit_file) if e["event"].startswith("delivery_flow.")]
    assert (denied["outcome"], denied["reason"], denied["flow_id"]) == (
        "denied",
        "csrf-check-failed",
        "flow_1",
    )
    assert route.call_count == 0


async def test_an_unauthenticated_write_is_not_audited(
    bff: BffFactory, upstream: respx.MockRouter, audit_file: Path
) -> None:
    async with bff(principal=None, settings=_settings(audit_file)) as client:
        response = await client.post(FLOWS, json=WRITE)
    assert response.status_code == 401
    assert not audit_file.exists()


async def test_sign_in_sign_out_and_a_failed_sign_in_are_audited_without_secrets(
    upstream: respx.MockRouter, audit_file: Path
) -> None:
    settings = auth_settings(audit={"sink": "file", "path": str(audit_file)})
    async with running_app(upstream, settings=settings) as harness:
        browser = harness.browser()
        raw_id = await harness.login(browser)
        assert (await browser.api("POST", LOGOUT)).status_code == 200
        stale = await browser.get(CALLBACK, params={"code": "x", "state": "y"})
        assert stale.status_code == 400
    events = _events(audit_file)
    assert [(e["event"], e["outcome"], e["status"], e["reason"]) for e in events] == [
        ("session.sign_in", "succeeded", 302, None),
        ("session.sign_out", "succeeded", 200, None),
        ("session.sign_in", "failed", 400, "login-failed"),
    ]
    assert events[0]["actor"] == {"iss": ISSUER, "sub": "alice", "auth": "session"}
    text = audit_file.read_text()
    for secret in (raw_id, CLIENT_SECRET, USERS["alice"].api_key):
        assert secret not in text


async def test_a_user_is_one_actor_when_the_providers_issuer_ends_in_a_slash(
    upstream: respx.MockRouter, audit_file: Path
) -> None:
    # Auth0 spells its issuer https://tenant.auth0.com/, and so is it configured.
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow("flow_new"), headers={"ETag": '"1"'})
    settings = auth_settings(
        oidc={"issuer": ISSUER + "/"}, audit={"sink": "file", "path": str(audit_file)}
    )
    provider = FakeProvider(FakeClock())
    provider.issuer = ISSUER + "/"
    async with running_app(upstream, settings=settings, provider=provider) as harness:
        browser = harness.browser()
        await harness.login(browser)
        assert (await browser.api("POST", FLOWS, json=WRITE)).status_code == 201
    events = _events(audit_file)
    assert [(e["event"], e["outcome"]) for e in events] == [
        ("session.sign_in", "succeeded"),
        ("delivery_flow.create", "attempted"),
        ("delivery_flow.create", "succeeded"),
    ]
    actors = {json.dumps(e["actor"], sort_keys=True) for e in events}
    assert actors == {json.dumps({"auth": "session", "iss": ISSUER + "/", "sub": "alice"})}


# --- the chain and `bff audit verify` -----------------------------------------------------------


async def _chain(path: Path, count: int) -> list[str]:
    log = AuditLog(FileSink(path, fsync=False), instance="test-1")
    for number in range(count):
        await log.record(
            AuditEvent(
                event="delivery_flow.delete",
                outcome="attempted",
                audit_id=f"aud_{number:024x}",
                actor=AuditActor(iss="https://idp.test", sub="alice", auth="session"),
                flow_id=f"flow_{number}",
            )
        )
    log.close()
    return path.read_text().splitlines(keepends=True)


async def test_verify_passes_a_whole_chain_and_the_cli_says_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    await _chain(path, 4)
    assert main(["audit", "verify", str(path)]) == 0
    assert "ok: 4 event(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("tamper", "line", "problem"),
    [
        (lambda lines: [lines[0], lines[1].replace("flow_1", "flow_9"), *lines[2:]], 2, "edited"),
        (lambda lines: [lines[0], *lines[2:]], 2, "missing"),
        (lambda lines: [lines[0], lines[2], lines[1], lines[3]], 2, "missing"),
        (lambda lines: [*lines[:3], lines[2]], 4, "reordered or repeated"),
    ],
    ids=["edited", "deleted", "swapped", "repeated"],
)
async def test_verify_names_the_first_broken_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Any,
    line: int,
    problem: str,
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(tamper(await _chain(tmp_path / "original.jsonl", 4))))
    assert main(["audit", "verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:{line}:" in out and problem in out


async def test_verify_of_a_missing_file_says_so_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", str(tmp_path / "nope.jsonl")]) == 2
    assert "No such file" in capsys.readouterr().err
