from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
ACME_RW = {"Authorization": "Bearer zen_key_dev_acme_rw"}
FLOWS = "/v1/tenants/ten_acme/delivery-flows"
STARTUP_SECONDS = 15.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Sandbox:
    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self.output = ""

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        self.output, _ = self.process.communicate(timeout=10)
        return self.process.returncode


@contextmanager
def running_sandbox(db: Path) -> Iterator[Sandbox]:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "serve",
            "--config",
            "config/dev.toml",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--db",
            str(db),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sandbox = Sandbox(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        with httpx.Client(base_url=sandbox.base_url, timeout=1.0) as client:
            while True:
                if process.poll() is not None:
                    pytest.fail(f"sandbox exited early: {process.communicate()[0]}")
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("sandbox did not become healthy")
                time.sleep(0.05)
        yield sandbox
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


@pytest.mark.e2e
def test_flows_survive_a_restart_of_the_process(tmp_path: Path) -> None:
    db = tmp_path / "state" / "sandbox.db"
    body = {
        "name": "stripe-to-orders",
        "cluster_id": "plane_dev_us_east_1",
        "source_id": "ing_stripe_prod",
        "destination_id": "dest_orders_api",
    }
    with running_sandbox(db) as first:
        with httpx.Client(base_url=first.base_url) as client:
            created = client.post(
                FLOWS, json=body, headers={**ACME_RW, "Idempotency-Key": "e2e-create"}
            )
            assert created.status_code == 201, created.text
        assert first.stop() == 0
        assert "Traceback" not in first.output
        assert f"sandbox listening on {first.base_url} (db {db})" in first.output
    assert db.exists()

    with running_sandbox(db) as second:
        with httpx.Client(base_url=second.base_url) as client:
            flow = created.json()
            fetched = client.get(f"{FLOWS}/{flow['id']}", headers=ACME_RW)
            assert fetched.status_code == 200
            assert fetched.json() == flow
            assert fetched.headers["etag"] == '"1"'
            # The idempotency record survived too: the retry replays, it does not duplicate.
            replay = client.post(
                FLOWS, json=body, headers={**ACME_RW, "Idempotency-Key": "e2e-create"}
            )
            assert replay.headers["idempotency-replayed"] == "true"
            assert replay.json() == flow
            listing = client.get(FLOWS, headers=ACME_RW).json()
            assert [item["id"] for item in listing["delivery_flows"]] == [flow["id"]]
        assert second.stop(signal.SIGINT) == 0
        assert "Traceback" not in second.output
