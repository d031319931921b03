"""``bff check-config`` (and ``serve``) refuse what cannot work, with one line naming the key;
``--probe`` contacts the real provider and the upstream and reports each check; ``bff keys``
makes the key files a configuration names and rotates the session key ring."""

from __future__ import annotations

import base64
import socket
import stat
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
        f"signing key {empty} is not a PEM EC key "
        f"(set by BFF__INTERNAL_JWT__SIGNING_KEY_FILE, with {DEV})\n"
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
        "bff: configuration error: [oidc].client_secret: required (set it, or client_secret_file) "
        f"(set by BFF__OIDC__CLIENT_SECRET, with {DEV})\n"
    )


def test_serve_on_a_busy_port_says_so_in_one_line_before_announcing_anything() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _bff("serve", "--config", str(DEV), "--port", str(port))
    assert result.returncode == 2
    assert result.stderr == (
        f"bff serve: port {port} on 127.0.0.1 is already in use; stop what holds it or choose "
        "another port (--port)\n"
    )
    assert result.stdout == ""


# Redis sessions over the development config; nothing here connects to Redis.
REDIS = {"BFF__SESSIONS__BACKEND": "redis", "BFF__SESSIONS__REDIS_URL": "redis://127.0.0.1:1/0"}


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_redis_sessions_without_a_key_ring_are_refused_naming_the_setting_and_bff_keys(
    command: str,
) -> None:
    result = _bff(
        command,
        "--config",
        str(DEV),
        *(["--port", "0"] if command == "serve" else []),
        **REDIS,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "bff: configuration error: [sessions].encryption_keys_file: required when "
        "[sessions].backend = 'redis'"
    )
    assert "bff keys --config FILE" in result.stderr
    assert result.stdout == ""


def _production_like(tmp_path: Path) -> Path:
    """A config naming both key files, relative to it, and nothing else to read."""
    config = tmp_path / "bff.toml"
    config.write_text(
        """\
[oidc]
client_secret = "a-client-secret"

[internal_jwt]
signing_key_file = "keys/upstream-signing-key.pem"

[sessions]
backend = "redis"
redis_url = "redis://127.0.0.1:1/0"
encryption_keys_file = "keys/session-keys"
"""
    )
    return config


def _ring_lines(ring: Path) -> list[tuple[str, bytes]]:
    lines = [line.split() for line in ring.read_text().splitlines()]
    assert all(len(parts) == 2 for parts in lines), lines
    return [(key_id, base64.b64decode(key, validate=True)) for key_id, key in lines]


def test_bff_keys_writes_the_missing_key_files_owner_only_and_never_over_one(
    tmp_path: Path,
) -> None:
    config = _production_like(tmp_path)
    ring, signing_key = (
        tmp_path / "keys" / "session-keys",
        tmp_path / "keys" / "upstream-signing-key.pem",
    )
    refused = _bff("check-config", "--config", str(config))
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        f"bff: configuration error: [sessions].encryption_keys_file: cannot read {ring}"
    )

    made = _bff("keys", "--config", str(config))
    assert made.returncode == 0, made.stderr
    wrote = made.stdout.splitlines()
    assert [line.split(": ")[0] for line in wrote] == [f"wrote {ring}", f"wrote {signing_key}"]
    assert "[sessions].encryption_keys_file" in wrote[0]
    assert "[internal_jwt].signing_key_file" in wrote[1]
    for path in (ring, signing_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    ((key_id, key),) = _ring_lines(ring)
    assert len(key) == 32 and key_id
    assert signing_key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    checked = _bff("check-config", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "sessions in redis" in checked.stdout
    assert checked.stdout.splitlines()[0].endswith(f", from {config}")

    # Run again, or with one file gone: only what is missing is written.
    before = ring.read_text()
    again = _bff("keys", "--config", str(config))
    assert (again.returncode, again.stdout) == (
        0,
        "nothing to write: every key file the configuration names exists\n",
    )
    signing_key.unlink()
    one = _bff("keys", "--config", str(config))
    assert one.returncode == 0
    assert [line.split(": ")[0] for line in one.stdout.splitlines()] == [f"wrote {signing_key}"]
    assert ring.read_text() == before


def test_bff_keys_rotate_puts_a_new_sealing_key_first_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    config = _production_like(tmp_path)
    ring = tmp_path / "keys" / "session-keys"
    nothing = _bff("keys", "rotate", "--config", str(config))
    assert nothing.returncode == 2
    assert "no key ring to rotate" in nothing.stderr and "bff keys --config" in nothing.stderr
    assert not ring.exists()

    assert _bff("keys", "--config", str(config)).returncode == 0
    first = _ring_lines(ring)
    rotated = _bff("keys", "rotate", "--config", str(config))
    assert rotated.returncode == 0, rotated.stderr
    second = _ring_lines(ring)
    assert second[1:] == first, "the old keys still open, in their order"
    new_id, new_key = second[0]
    assert new_id not in {key_id for key_id, _ in first} and len(new_key) == 32
    assert rotated.stdout.startswith(f"rotated {ring}: new key {new_id}")
    assert stat.S_IMODE(ring.stat().st_mode) == 0o600
    assert _bff("keys", "rotate", "--config", str(config)).returncode == 0
    assert _ring_lines(ring)[2:] == first
    assert _bff("check-config", "--config", str(config)).returncode == 0


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("k2 not-base64!", "the key is not base64"),
        (f"k2 {base64.b64encode(bytes(16)).decode()}", "the key is 16 bytes, not 32"),
        ("just-one-word", "expected '<id> <base64 of 32 bytes>'"),
        (f"k1 {base64.b64encode(bytes(32)).decode()}", "key id 'k1' appears twice"),
    ],
)
def test_a_broken_key_ring_is_refused_naming_the_file_and_the_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    ring = tmp_path / "session-keys"
    ring.write_text(f"k1 {base64.b64encode(bytes(range(32))).decode()}\n{line}\n")
    result = _bff(
        "check-config", "--config", str(DEV), BFF__SESSIONS__ENCRYPTION_KEYS_FILE=str(ring), **REDIS
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"bff: configuration error: [sessions].encryption_keys_file: {ring}:2: {problem} "
        f"(set by BFF__SESSIONS__ENCRYPTION_KEYS_FILE, with {DEV})\n"
    )
    rotated = _bff("keys", "rotate", BFF__SESSIONS__ENCRYPTION_KEYS_FILE=str(ring), **REDIS)
    assert rotated.returncode == 1, "a ring that does not load is not rewritten"
    assert f"{ring}:2: {problem}" in rotated.stderr
    assert ring.read_text().count("\n") == 2


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
