"""``bff dev``: the launcher with real child processes on free loopback ports."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from devstack.stack import run_dev_stack
from tests.support.dev_stack import CONFIG
from tests.support.oidc_login import browser_login
from tests.support.ports import free_ports

pytestmark = pytest.mark.e2e

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

# A stand-in for `bff serve`: answers /healthz, and /env with the BFF__ variables it was given.
STAND_IN_BFF = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({k: v for k, v in os.environ.items() if k.startswith("BFF__")}).encode()
        self.send_response(200 if self.path in ("/healthz", "/env") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

LAUNCHER = """
import json, sys
from devstack.stack import run_dev_stack
args = json.loads(sys.argv[1])
sys.exit(run_dev_stack(args.pop("config"), **args))
"""


@dataclass
class Ports:
    bff: int
    sandbox: int
    idp: int

    @classmethod
    def free(cls) -> Ports:
        return cls(*free_ports(3))

    def all(self) -> list[int]:
        return [self.bff, self.sandbox, self.idp]


@dataclass
class Launcher:
    """``run_dev_stack`` in its own process, with its output collected line by line."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls, ports: Ports, data_dir: Path, *, stand_in: bool, env: dict[str, str] | None = None
    ) -> Launcher:
        args: dict[str, object] = {
            "config": CONFIG,
            "port": ports.bff,
            "sandbox_port": ports.sandbox,
            "idp_port": ports.idp,
            "data_dir": str(data_dir),
        }
        if stand_in:
            args["bff_command"] = [sys.executable, "-c", STAND_IN_BFF, str(ports.bff)]
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        launcher = cls(process)
        threading.Thread(target=launcher._read, daemon=True).start()
        return launcher

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.seen:
                if match := re.search(pattern, line):
                    return match
            try:
                self.seen.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.seen))

    def child_pids(self) -> dict[str, int]:
        self.wait_for(r"bff dev: started bff ")
        return {
            m.group(1): int(m.group(2))
            for line in self.seen
            if (m := re.search(r"bff dev: started (\w+) \(pid (\d+)\)", line))
        }

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def ports() -> Ports:
    return Ports.free()


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (Linux /proc/net)."""
    addresses: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                addresses.add(address)
    return addresses


LOOPBACK_V4 = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


@pytest.fixture
def kill_leftovers() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        if running(pid):
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc/net")
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_stack_starts_on_loopback_prints_its_urls_and_stops_cleanly(
    ports: Ports, tmp_path: Path, stop_signal: signal.Signals, kill_leftovers: list[int]
) -> None:
    launcher = Launcher.start(ports, tmp_path / "data", stand_in=True)
    try:
        pids = launcher.child_pids()
        kill_leftovers.extend(pids.values())
        bff = f"http://127.0.0.1:{ports.bff}"
        launcher.wait_for(rf"Dev console:\s+{re.escape(bff)}/$")
        launcher.wait_for(r"^\s+zen_key_dev_globex_rw\s+ten_globex")
        output = "\n".join(launcher.seen)
        assert f"Sign in:            {bff}/api/bff/v1/auth/login?returnTo=/" in output
        assert f"http://127.0.0.1:{ports.sandbox}" in output
        assert f"http://127.0.0.1:{ports.idp}" in output
        for user in ("alice", "bob", "carol"):
            assert re.search(rf"^\s+{user}\s+ten_", output, re.MULTILINE)
        assert "zen_key_dev_acme_rw" in output

        with httpx.Client(timeout=5.0, trust_env=False) as http:
            assert http.get(f"http://127.0.0.1:{ports.sandbox}/healthz").status_code == 200
            discovery = http.get(
                f"http://127.0.0.1:{ports.idp}/.well-known/openid-configuration"
            ).json()
            assert discovery["issuer"] == f"http://127.0.0.1:{ports.idp}"
            assert http.get(f"{bff}/env").json() == {
                "BFF__BFF__PUBLIC_ORIGIN": bff,
                "BFF__UPSTREAM__BASE_URL": f"http://127.0.0.1:{ports.sandbox}",
                "BFF__OIDC__ISSUER": f"http://127.0.0.1:{ports.idp}",
                "BFF__LOG__FORMAT": "text",
                "BFF__AUDIT__SINK": "file",
                "BFF__AUDIT__PATH": str(tmp_path / "data" / "audit.jsonl"),
            }
        for port in ports.all():
            assert listening_addresses(port) == {LOOPBACK_V4}, port
        assert (tmp_path / "data" / "sandbox.db").exists()

        assert launcher.stop(stop_signal) == 0
        assert set(pids) == {"sandbox", "idp", "bff"}
        assert [name for name, pid in pids.items() if running(pid)] == []
        for port in ports.all():
            assert listening_addresses(port) == set(), port
    finally:
        launcher.kill()


def test_a_busy_port_is_named_and_nothing_starts(ports: Ports, tmp_path: Path) -> None:
    out = io.StringIO()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports.sandbox))
        holder.listen()

        status = run_dev_stack(
            CONFIG,
            port=ports.bff,
            sandbox_port=ports.sandbox,
            idp_port=ports.idp,
            data_dir=str(tmp_path / "data"),
            stdout=out,
        )

    # One line, naming the port, whose it is and the flag that moves it; nothing announced.
    assert status == 2
    assert out.getvalue() == (
        f"bff dev: port {ports.sandbox} for the sandbox on 127.0.0.1 is already in use; "
        "stop what holds it or choose another port (--sandbox-port)\n"
    )
    assert not (tmp_path / "data").exists()


def test_when_a_child_dies_the_others_are_stopped_and_its_output_shown(
    ports: Ports, tmp_path: Path, kill_leftovers: list[int]
) -> None:
    out = io.StringIO()
    failing_bff = [sys.executable, "-c", "print('cannot bind: boom'); raise SystemExit(3)"]

    status = run_dev_stack(
        CONFIG,
        port=ports.bff,
        sandbox_port=ports.sandbox,
        idp_port=ports.idp,
        data_dir=str(tmp_path / "data"),
        bff_command=failing_bff,
        stdout=out,
    )

    text = out.getvalue()
    pids = {m[0]: int(m[1]) for m in re.findall(r"bff dev: started (\w+) \(pid (\d+)\)", text)}
    kill_leftovers.extend(pids.values())
    assert status != 0
    assert "bff dev: bff exited with status 3; its last output:" in text
    assert "    cannot bind: boom" in text
    assert set(pids) == {"sandbox", "idp", "bff"}
    assert [name for name, pid in pids.items() if running(pid)] == []
    assert "Dev console" not in text


@pytest.mark.parametrize("credential", ["internal-jwt", "relay"])
def test_alice_signs_in_through_the_real_stack(
    ports: Ports, tmp_path: Path, kill_leftovers: list[int], credential: str
) -> None:
    # In relay mode the sandbox checks the provider's own access token (a JWT with zen_tenants).
    env = {"BFF__UPSTREAM__CREDENTIAL": credential}
    launcher = Launcher.start(ports, tmp_path / "data", stand_in=False, env=env)
    try:
        kill_leftovers.extend(launcher.child_pids().values())
        launcher.wait_for(r"Dev console:")
        bff = f"http://127.0.0.1:{ports.bff}"
        with httpx.Client(timeout=10.0, trust_env=False) as browser:
            final = browser_login(browser, bff, "alice", return_to="/")
            assert str(final.url) == f"{bff}/"
            callback = [r for r in final.history if r.url.path == "/api/bff/v1/auth/callback"]
            assert len(callback) == 1
            assert callback[0].is_redirect
            assert "set-cookie" in callback[0].headers

            session = browser.get(f"{bff}/api/bff/v1/auth/session", headers={"X-CSRF": "1"})
            assert session.status_code == 200, session.text
            assert session.json()["user"]["sub"] == "alice"

            flows = browser.get(
                f"{bff}/api/bff/v1/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flows",
                headers={"X-CSRF": "1"},
            )
            assert flows.status_code == 200, flows.text
            assert isinstance(flows.json()["items"], list)
            other_tenant = browser.get(
                f"{bff}/api/bff/v1/tenants/ten_globex/clusters/plane_globex_main/delivery-flows",
                headers={"X-CSRF": "1"},
            )
            assert other_tenant.status_code == 403
        assert launcher.stop() == 0
    finally:
        launcher.kill()
