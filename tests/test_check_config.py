"""``bff check-config`` (and ``serve``) refuse what cannot work, with one line naming the key;
``--probe`` contacts the real provider and the upstream and reports each check."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import BFF_SCRIPT, clean_environ, serving

REPO = Path(__file__).resolve().parents[1]
DEV = REPO / "config" / "dev.toml"


def _bff(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BFF_SCRIPT), *args],
        cwd=REPO,
        env=clean_environ(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_signing_key_file_without_a_key_is_named_not_a_traceback(
    tmp_path: Path, command: str
) -> None:
    empty = tmp_path / "signing.pem"
    empty.write_text("not a key\n")
    result = _bff(
        command,
        "--config",
        str(DEV),
        *(["--port", "0"] if command == "serve" else []),
        BFF__INTERNAL_JWT__SIGNING_KEY_FILE=str(empty),
    )
    assert result.returncode == 2
    assert result.stderr == (
        "bff: configuration error: [internal_jwt].signing_key_file: "
        f"signing key {empty} is not a PEM EC key\n"
    )
    assert "Traceback" not in result.stdout


def test_a_ca_file_without_a_certificate_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    result = _bff("check-config", "--config", str(DEV), BFF__UPSTREAM__CA_FILE=str(bogus))
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"bff: configuration error: [upstream].ca_file: {bogus} holds no CA certificate"
    )


def test_a_missing_client_secret_is_refused(tmp_path: Path) -> None:
    result = _bff("check-config", "--config", str(DEV), BFF__OIDC__CLIENT_SECRET="")
    assert result.returncode == 2
    assert result.stderr == (
        "bff: configuration error: [oidc].client_secret: required (set it, or client_secret_file)\n"
    )


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def _upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.e2e
def test_probe_reports_each_check_against_the_real_provider_and_upstream() -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    provider = [
        sys.executable, "-m", "devstack.idp", "--config", str(DEV), "--port", str(port),
        "--redirect-uri", "http://127.0.0.1:8000/api/bff/v1/auth/callback",
    ]  # fmt: skip
    with (
        _upstream() as upstream,
        serving(
            provider, name="the provider", url=issuer, ready="/.well-known/openid-configuration"
        ),
    ):
        settings = {"BFF__OIDC__ISSUER": issuer, "BFF__UPSTREAM__BASE_URL": upstream}
        good = _bff("check-config", "--probe", "--config", str(DEV), **settings)
        wrong = _bff(
            "check-config",
            "--probe",
            "--config",
            str(DEV),
            BFF__OIDC__CLIENT_SECRET="not-the-secret",
            **settings,
        )
    gone = _bff("check-config", "--probe", "--config", str(DEV), **settings)

    assert good.returncode == 0, good.stdout + good.stderr
    lines = good.stdout.splitlines()[1:]
    assert [line.split(":")[0] for line in lines] == [
        "ok   provider discovery",
        "ok   provider keys",
        "ok   client credentials",
        "ok   upstream",
    ]
    assert wrong.returncode == 1
    assert (
        "FAIL client credentials: the token endpoint refuses [oidc].client_id / client_secret"
        in wrong.stdout
    )
    assert gone.returncode == 1
    assert "FAIL provider discovery" in gone.stdout
    assert "FAIL upstream" in gone.stdout
