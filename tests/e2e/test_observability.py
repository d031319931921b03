"""What an operator sees of a whole dashboard session, with real processes (``bff dev``).

One traced journey (sign in, list, create, update, delete, sign out) with JSON logs and the audit
trail in a file. Then: the trace id sent by the browser is in the gateway's access lines, in its
audit events and in the sandbox's request log; the audit file verifies; and no line the stack
printed, nor any audit event, holds a secret the journey used.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.dev_stack import running_dev_stack
from tests.support.oidc_login import browser_login

pytestmark = pytest.mark.e2e

ACME_FLOWS = "/api/bff/v1/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flows"
FLOWS_ROUTE = "/api/bff/v1/tenants/{tid}/clusters/{cid}/delivery-flows"
CONFIG = Path(__file__).resolve().parents[2] / "config" / "dev.toml"
# A compact JWS: header.payload.signature, each base64url; both JSON parts start with "eyJ".
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


def _configured_secrets() -> list[str]:
    text = CONFIG.read_text()
    found = re.findall(r'^client_secret = "([^"]+)"', text, re.MULTILINE)
    found += re.findall(r'^key = "(zen_key_[^"]+)"', text, re.MULTILINE)
    assert len(found) >= 4, "config/dev.toml no longer names the secrets this test looks for"
    return found


def _json_lines(output: str, child: str) -> list[dict[str, Any]]:
    records = []
    for line in output.splitlines():
        prefix = f"[{child}] "
        if line.startswith(prefix) and line[len(prefix) :].startswith("{"):
            records.append(json.loads(line[len(prefix) :]))
    return records


def test_one_trace_through_gateway_audit_and_sandbox_and_no_secret_in_any_line(
    tmp_path: Path,
) -> None:
    audit_file = tmp_path / "audit.jsonl"
    env = {
        "BFF__LOG__FORMAT": "json",
        "BFF__AUDIT__SINK": "file",
        "BFF__AUDIT__PATH": str(audit_file),
    }
    trace_id = secrets.token_hex(16)
    traced = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    with (
        running_dev_stack(tmp_path, env) as stack,
        httpx.Client(trust_env=False, timeout=10.0) as browser,
    ):
        browser_login(browser, stack.url, "alice", return_to="/")
        used = [browser.cookies["bff_session"]]

        def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
            headers = {"X-CSRF": "1", **traced, **kwargs.pop("headers", {})}
            if method != "GET":
                headers["Origin"] = stack.url
            return browser.request(method, stack.url + path, headers=headers, **kwargs)

        assert call("GET", ACME_FLOWS).status_code == 200
        body = {"name": "traced", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"}
        created = call("POST", ACME_FLOWS, json=body)
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        updated = call(
            "PUT",
            location,
            json={**body, "name": "traced-renamed"},
            headers={"If-Match": created.headers["etag"]},
        )
        assert updated.status_code == 200, updated.text
        assert updated.headers["server-timing"].startswith("app;dur=")
        missing = call("GET", ACME_FLOWS + "/flow_missing")
        assert missing.status_code == 404
        assert missing.json()["traceId"] == trace_id
        deleted = call("DELETE", location, headers={"If-Match": updated.headers["etag"]})
        assert deleted.status_code == 204, deleted.text
        assert call("POST", "/api/bff/v1/auth/logout").status_code == 200
        # A terminal's bearer token from the provider (its demo shortcut), then one bearer write.
        provider = re.search(r"Identity provider:\s+(http://\S+)", stack.output())
        assert provider is not None, stack.output()
        issued = browser.post(
            f"{provider.group(1)}/oauth2/token",
            data={"grant_type": "password", "username": "alice", "password": "alice"},
            auth=("flows-bff-dev", _configured_secrets()[0]),
        )
        assert issued.status_code == 200, issued.text
        used.append(issued.json()["access_token"])
        bearer = {"Authorization": f"Bearer {used[-1]}", **traced}
        by_bearer = httpx.post(
            stack.url + ACME_FLOWS, json={**body, "name": "by-bearer"}, headers=bearer
        )
        assert by_bearer.status_code == 201, by_bearer.text
        gone = httpx.delete(stack.url + by_bearer.headers["location"], headers=bearer)
        assert gone.status_code == 204, gone.text
        # The sandbox on its own, with an API key: its request log names no credential either.
        sandbox_url = re.search(r"Sandbox backend:\s+(http://\S+)", stack.output())
        assert sandbox_url is not None, stack.output()
        direct = browser.get(
            f"{sandbox_url.group(1)}/v1/tenants/ten_acme/delivery-flows",
            headers={"Authorization": f"Bearer {_configured_secrets()[1]}", **traced},
        )
        assert direct.status_code == 200, direct.text
        assert stack.stop() == 0, stack.output()
        output = stack.output()

    # The gateway: one JSON access line per request, with the browser's trace id.
    access = [r for r in _json_lines(output, "bff") if r.get("log") == "access"]
    traced_lines = [r for r in access if r["trace_id"] == trace_id]
    assert [(r["method"], r["route"], r["status"]) for r in traced_lines] == [
        ("GET", FLOWS_ROUTE, 200),
        ("POST", FLOWS_ROUTE, 201),
        ("PUT", FLOWS_ROUTE + "/{fid}", 200),
        ("GET", FLOWS_ROUTE + "/{fid}", 404),
        ("DELETE", FLOWS_ROUTE + "/{fid}", 204),
        ("POST", "/api/bff/v1/auth/logout", 200),
        ("POST", FLOWS_ROUTE, 201),
        ("DELETE", FLOWS_ROUTE + "/{fid}", 204),
    ]
    for line in traced_lines[:5]:
        assert line["sub"] == "alice" and line["tenant_id"] == "ten_acme"
        assert line["upstream_calls"] >= 1 and line["upstream_ms"] > 0
    # Plain text for terminals and collectors: no colour codes from any process (werkzeug's
    # request log colours 3xx and 4xx lines, and the provider answers with redirects).
    assert "\x1b[" not in output
    # uvicorn's own access log is off: no other request lines.
    assert not re.search(r'\[bff\] .*"(GET|POST|PUT|DELETE) /', output)

    # The sandbox logs the traceparent it received: same trace, the gateway's span as parent.
    sandbox = re.findall(
        r"^\[sandbox\] .*traceparent=00-([0-9a-f]{32})-[0-9a-f]{16}-01$", output, re.M
    )
    assert sandbox.count(trace_id) >= 5, output

    # The audit trail: attempted and succeeded for each write, with the trace; the chain holds.
    events = [json.loads(line) for line in audit_file.read_text().splitlines()]
    writes = [e for e in events if e["event"].startswith("delivery_flow.")]
    assert [(e["event"], e["outcome"], e["actor"]["auth"]) for e in writes] == [
        ("delivery_flow.create", "attempted", "session"),
        ("delivery_flow.create", "succeeded", "session"),
        ("delivery_flow.update", "attempted", "session"),
        ("delivery_flow.update", "succeeded", "session"),
        ("delivery_flow.delete", "attempted", "session"),
        ("delivery_flow.delete", "succeeded", "session"),
        ("delivery_flow.create", "attempted", "bearer"),
        ("delivery_flow.create", "succeeded", "bearer"),
        ("delivery_flow.delete", "attempted", "bearer"),
        ("delivery_flow.delete", "succeeded", "bearer"),
    ]
    assert {e["trace_id"] for e in writes} == {trace_id}
    assert {e["client_ip"] for e in writes} == {"127.0.0.1"}
    assert [e["event"] for e in events if not e["event"].startswith("delivery_flow.")] == [
        "session.sign_in",
        "session.sign_out",
    ]
    verified = subprocess.run(
        [sys.executable, "-m", "bff", "audit", "verify", str(audit_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # No secret of the journey in any line the three processes printed, nor in any audit event.
    # (The launcher's own banner shows the demo API keys on purpose: they are how to call the
    # sandbox by hand.)
    printed = "\n".join(line for line in output.splitlines() if line.startswith("["))
    assert "[idp] " in printed and "[sandbox] " in printed
    everything = printed + audit_file.read_text()
    for secret in [*used, *_configured_secrets()]:
        assert secret not in everything
    assert not JWT.search(everything), JWT.search(everything)
    assert not re.search(r"(?i)bearer\s+[A-Za-z0-9_.-]", everything)
