"""``bff serve`` stopped with SIGTERM while work is in flight, as an orchestrator stops it.

Real processes on loopback: the development provider (for a bearer token), a stub backend in
this process whose flow list answers as slowly as the test says, and ``bff serve`` with a
two-second shutdown grace. In flight at SIGTERM: a call whose upstream answers within the grace,
one whose upstream answers long after it, and an upload whose body never finishes; and, on its
own, a signed-in session's event stream, which never finishes by itself.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import CLUSTERS, DESTINATIONS, INGESTERS, upstream_flow
from tests.support.oidc_login import browser_login
from tests.support.ports import free_ports
from tests.support.processes import BFF_SCRIPT, ServerProcess, clean_environ, serving

pytestmark = pytest.mark.e2e

CONFIG = str(Path(__file__).resolve().parents[2] / "config" / "dev.toml")
FLOWS = "/api/bff/v1/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flows"
GRACE_SECONDS = 2


class _Backend(BaseHTTPRequestHandler):
    """The backend's reads. The flow list answers after ``limit`` tenths of a second: the page
    size is what the gateway passes on, so it carries the delay the test wants."""

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        answers = {
            "/healthz": {"status": "ok"},
            "/v1/tenants/ten_acme/clusters": CLUSTERS,
            "/v1/tenants/ten_acme/ingesters": INGESTERS,
            "/v1/tenants/ten_acme/destinations": DESTINATIONS,
        }
        if path == "/v1/tenants/ten_acme/delivery-flows":
            params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
            time.sleep(int(params.get("limit", "0")) / 10)
            body = {"delivery_flows": [upstream_flow()], "next_cursor": None}
        else:
            body = answers.get(path, {})
        data = json.dumps(body).encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the gateway may have given up on this call
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def stub_backend() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _token(issuer: str) -> str:
    answer = httpx.post(
        f"{issuer}/oauth2/token",
        data={"grant_type": "password", "username": "alice", "password": "alice"},
        auth=("flows-bff-dev", "dev-only-client-secret"),
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


@contextmanager
def gateway(tmp_path: Path, grace: int, **env: str) -> Iterator[tuple[ServerProcess, str, str]]:
    """The development provider, the stub backend and ``bff serve`` with a ``grace`` second
    shutdown grace, running; the gateway's process, its URL and the provider's."""
    bff_port, idp_port = free_ports(2)
    bff, idp = f"http://127.0.0.1:{bff_port}", f"http://127.0.0.1:{idp_port}"
    provider_argv = [
        sys.executable, "-m", "devstack.idp", "--config", CONFIG, "--port", str(idp_port),
        "--redirect-uri", f"{bff}/api/bff/v1/auth/callback",
    ]  # fmt: skip
    with (
        stub_backend() as backend,
        serving(
            provider_argv, name="the provider", url=idp, ready="/.well-known/openid-configuration"
        ),
        serving(
            [str(BFF_SCRIPT), "serve", "--config", CONFIG, "--port", str(bff_port)],
            name="the BFF",
            url=bff,
            env=clean_environ(
                BFF__BFF__PUBLIC_ORIGIN=bff,
                BFF__UPSTREAM__BASE_URL=backend,
                BFF__OIDC__ISSUER=idp,
                BFF__SERVER__SHUTDOWN_GRACE_SECONDS=str(grace),
                **env,
            ),
            log=tmp_path / "bff.log",
            grace=grace + 10,
        ) as server,
    ):
        yield server, bff, idp


def test_sigterm_drains_within_the_grace_and_exits_0(tmp_path: Path) -> None:
    slow_upstream = {"BFF__UPSTREAM__READ_TIMEOUT": "30", "BFF__UPSTREAM__TOTAL_TIMEOUT": "30"}
    with (
        gateway(tmp_path, GRACE_SECONDS, **slow_upstream) as (server, bff, idp),
        ThreadPoolExecutor(2) as pool,
    ):
        bff_port = int(bff.rsplit(":", 1)[1])
        bearer = {"Authorization": f"Bearer {_token(idp)}"}
        assert httpx.get(f"{bff}{FLOWS}?limit=1", headers=bearer).status_code == 200

        def list_flows(tenths: int) -> Future[httpx.Response]:
            return pool.submit(
                httpx.get, f"{bff}{FLOWS}?limit={tenths}", headers=bearer, timeout=30.0
            )

        quick = list_flows(10)  # the upstream answers after 1 s: within the grace
        slow = list_flows(60)  # after 6 s: beyond it
        with socket.create_connection(("127.0.0.1", bff_port)) as upload:
            upload.sendall(
                f"POST {FLOWS} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {bearer['Authorization']}\r\nContent-Type: application/json\r\n"
                'Content-Length: 1000\r\n\r\n{"na'.encode()
            )
            time.sleep(0.3)  # every call has reached the gateway
            stopped_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            status = server.process.wait(timeout=GRACE_SECONDS + 8)
            took = time.monotonic() - stopped_at
            assert status == 0, server.output()
            # The grace, the upstream client's and the provider client's closing, a little slack.
            assert took < GRACE_SECONDS + 3, (took, server.output())
            # The unfinished upload did not hold the process: it was told, then disconnected.
            upload.settimeout(5)
            answer = upload.recv(65536)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert b"service-unavailable" in answer and b"retry-after: 1" in answer.lower()

        assert quick.result(timeout=10).status_code == 200
        cut_short = slow.result(timeout=10)
        assert cut_short.status_code == 503, cut_short.text
        assert cut_short.json()["type"].endswith("/service-unavailable")
        output = server.output()
        assert "Traceback" not in output, output
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{bff}/readyz")


def test_sigterm_ends_open_session_streams_cleanly_long_before_the_grace(tmp_path: Path) -> None:
    """A dashboard tab's event stream never finishes by itself: at SIGTERM the gateway ends it
    (the browser reconnects elsewhere) instead of holding the shutdown for its whole grace."""
    grace = 8
    with (
        gateway(tmp_path, grace) as (server, bff, _),
        httpx.Client(trust_env=False, timeout=10.0) as browser,
    ):
        browser_login(browser, bff, "alice")
        events = f"{bff}/api/bff/v1/auth/session/events"
        with browser.stream("GET", events, headers={"Sec-Fetch-Site": "same-origin"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["x-accel-buffering"] == "no"
            lines = stream.iter_lines()
            assert next(lines) == "retry: 3000"
            stopped_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            rest = list(lines)  # to the stream's clean end; a cut connection would raise
            ended_after = time.monotonic() - stopped_at
        status = server.process.wait(timeout=grace + 8)
        took = time.monotonic() - stopped_at
        assert rest == [""], rest
        assert ended_after < 1.0, ended_after
        assert status == 0, server.output()
        assert took < grace / 2, (took, server.output())
        assert "Traceback" not in server.output()
