from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.processes import ServerProcess, serving

REPO = Path(__file__).resolve().parents[2]
ACME_RW = {"Authorization": "Bearer zen_key_dev_acme_rw"}
FLOWS = "/v1/tenants/ten_acme/delivery-flows"
STARTUP_SECONDS = 15.0


@contextmanager
def running_sandbox(db: Path) -> Iterator[ServerProcess]:
    port = free_port()
    argv = [
        sys.executable, "-m", "sandbox", "serve",
        "--config", "config/dev.toml",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--db", str(db),
    ]  # fmt: skip
    with serving(
        argv,
        name="the sandbox",
        url=f"http://127.0.0.1:{port}",
        cwd=REPO,
        start_timeout=STARTUP_SECONDS,
    ) as sandbox:
        yield sandbox


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
        with httpx.Client(base_url=first.url) as client:
            created = client.post(
                FLOWS, json=body, headers={**ACME_RW, "Idempotency-Key": "e2e-create"}
            )
            assert created.status_code == 201, created.text
        assert first.stop() == 0
        assert "Traceback" not in first.output()
        assert f"sandbox listening on {first.url} (db {db})" in first.output()
    assert db.exists()

    with running_sandbox(db) as second:
        with httpx.Client(base_url=second.url) as client:
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
        assert "Traceback" not in second.output()
