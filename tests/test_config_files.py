"""The shipped configuration files: every file in ``config/`` loads, and the production example
documents every setting with its default, holds no secret, and names the key of a missing file.
"""

from __future__ import annotations

import base64
import datetime
import re
import secrets
import subprocess
import textwrap
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc.jwk import ECKey

import sandbox.config
from bff import ConfigError, Settings, create_app, load_settings
from bff.settings import TABLES
from tests.support.processes import BFF_SCRIPT, clean_environ

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "config"
CONFIG_FILES = sorted(CONFIG_DIR.glob("*.toml"))
PRODUCTION_EXAMPLE = CONFIG_DIR / "production.example.toml"
COMPOSE_TOML = CONFIG_DIR / "compose.toml"


def _toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def _sections() -> dict[str, type[msgspec.Struct]]:
    """Every table by its dotted TOML name, ``upstream.breaker`` included."""
    return dict(TABLES)


def _setting_default(section: str, key: str) -> Any:
    for field in msgspec.structs.fields(_sections()[section]):
        if field.name == key:
            if field.default is not msgspec.NODEFAULT:
                return field.default
            return field.default_factory()  # type: ignore[misc]
    raise KeyError(f"[{section}].{key}")


def _key_ring() -> str:
    """A session key ring of one key, in the documented format."""
    return f"k1 {base64.b64encode(secrets.token_bytes(32)).decode()}\n"


def _pem_signing_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _stand_in_files(path: Path, tmp_path: Path) -> dict[str, str]:
    """``BFF__…`` overrides pointing every ``*_file`` key whose file is absent at a temp file."""
    environ: dict[str, str] = {}
    for section, values in _toml(path).items():
        if section not in _sections() or not isinstance(values, dict):
            continue
        for key, value in values.items():
            if not key.endswith("_file") or (path.parent / value).exists():
                continue
            stand_in = tmp_path / f"{section}-{key}"
            if key == "signing_key_file":
                stand_in.write_bytes(_pem_signing_key())
            elif key == "encryption_keys_file":
                stand_in.write_text(_key_ring())
            else:
                stand_in.write_text(f"stand-in for [{section}].{key}\n")
            environ[f"BFF__{section.upper()}__{key.upper()}"] = str(stand_in)
    return environ


def test_the_config_directory_holds_the_documented_files() -> None:
    assert {path.name for path in CONFIG_FILES} >= {
        "dev.toml",
        "compose.toml",
        "production.example.toml",
    }


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_every_config_file_loads(path: Path, tmp_path: Path) -> None:
    settings = load_settings(path, environ=_stand_in_files(path, tmp_path))
    assert isinstance(settings, Settings)
    if "sandbox" in _toml(path):
        seeded = sandbox.config.load_settings(path)
        assert seeded.tenants, f"{path.name}: the sandbox has no tenants"


def test_the_production_example_loads_with_its_files_in_place(tmp_path: Path) -> None:
    environ = _stand_in_files(PRODUCTION_EXAMPLE, tmp_path)
    assert set(environ) == {
        "BFF__OIDC__CLIENT_SECRET_FILE",
        "BFF__INTERNAL_JWT__SIGNING_KEY_FILE",
        "BFF__UPSTREAM__CA_FILE",
        "BFF__UPSTREAM__CERT_FILE",
        "BFF__UPSTREAM__KEY_FILE",
        "BFF__SESSIONS__ENCRYPTION_KEYS_FILE",
    }
    settings = load_settings(PRODUCTION_EXAMPLE, environ=environ)

    assert settings.oidc.client_secret == "stand-in for [oidc].client_secret_file"
    assert settings.secure_cookies, "an https public origin gives __Host- cookies"
    assert settings.upstream.credential == "internal-jwt"
    assert settings.internal_jwt.signing_key_file == environ["BFF__INTERNAL_JWT__SIGNING_KEY_FILE"]
    assert settings.sessions.backend == "redis"
    assert settings.sessions.encryption_keys_file == environ["BFF__SESSIONS__ENCRYPTION_KEYS_FILE"]
    assert urlsplit(settings.sessions.redis_url or "").scheme == "rediss"
    assert urlsplit(settings.upstream.base_url).scheme == "https"
    assert urlsplit(settings.oidc.issuer).scheme == "https"


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey]
) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=subject == issuer[0], path_length=None), True)
        .sign(issuer[1], hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


async def test_the_production_example_starts_with_real_key_and_tls_files(tmp_path: Path) -> None:
    ca_key, client_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    files = {
        "ca.pem": _certificate("upstream CA", ca_key, ("upstream CA", ca_key)),
        "client.pem": _certificate("flows-bff", client_key, ("upstream CA", ca_key)),
        "client.key": client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "signing-key.pem": _pem_signing_key(),
        "client-secret": b"s3cret\n",
        "session-keys": _key_ring().encode(),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    settings = load_settings(
        PRODUCTION_EXAMPLE,
        environ={
            "BFF__UPSTREAM__CA_FILE": str(tmp_path / "ca.pem"),
            "BFF__UPSTREAM__CERT_FILE": str(tmp_path / "client.pem"),
            "BFF__UPSTREAM__KEY_FILE": str(tmp_path / "client.key"),
            "BFF__INTERNAL_JWT__SIGNING_KEY_FILE": str(tmp_path / "signing-key.pem"),
            "BFF__OIDC__CLIENT_SECRET_FILE": str(tmp_path / "client-secret"),
            "BFF__SESSIONS__ENCRYPTION_KEYS_FILE": str(tmp_path / "session-keys"),
        },
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url=settings.bff.public_origin
        ) as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        jwks = (await client.get("/api/bff/v1/.well-known/jwks.json")).json()
    # Every worker and instance publishes the configured key, not one of its own.
    expected = ECKey.import_key(files["signing-key.pem"]).thumbprint()
    assert [key["kid"] for key in jwks["keys"]] == [expected]


def test_the_production_example_without_its_secret_file_names_the_key() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(PRODUCTION_EXAMPLE, environ={})
    assert str(error.value) == (
        "[oidc].client_secret_file: cannot read /run/secrets/flows-bff/oidc-client-secret: "
        f"No such file or directory (in {PRODUCTION_EXAMPLE})"
    )


def test_a_missing_key_or_tls_file_fails_at_load_naming_the_key(tmp_path: Path) -> None:
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret")
    with pytest.raises(ConfigError) as error:
        load_settings(PRODUCTION_EXAMPLE, environ={"BFF__OIDC__CLIENT_SECRET_FILE": str(secret)})
    assert str(error.value) == (
        "[upstream].ca_file: cannot read /etc/flows-bff/tls/upstream-ca.pem: "
        f"No such file or directory (in {PRODUCTION_EXAMPLE})"
    )


def test_the_production_example_holds_no_secret_value() -> None:
    raw = _toml(PRODUCTION_EXAMPLE)
    assert "client_secret" not in raw["oidc"]
    assert "redis_sentinel_password" not in raw["sessions"]
    assert "@" not in raw["sessions"]["redis_url"], "a Redis password belongs in the environment"


def _documented_keys(path: Path) -> dict[str, dict[str, str]]:
    """Per section, every key set or shown commented out (``# key = value``), with its value."""
    documented: dict[str, dict[str, str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        if match := re.fullmatch(r"\[([\w.]+)\]", line):
            section = match[1]
            documented[section] = {}
        elif match := re.fullmatch(r"#? ?(\w+) = (.+)", line):
            documented[section][match[1]] = match[2]
    return documented


def test_the_production_example_documents_every_setting_with_its_default() -> None:
    documented = _documented_keys(PRODUCTION_EXAMPLE)
    for section, section_type in _sections().items():
        keys = {
            field.name
            for field in msgspec.structs.fields(section_type)
            if f"{section}.{field.name}" not in TABLES
        }
        assert section in documented, f"[{section}] is missing"
        assert set(documented[section]) == keys, f"[{section}]: keys differ from the settings"
    commented = re.findall(r"^# (\w+) = (.+)$", PRODUCTION_EXAMPLE.read_text(), re.MULTILINE)
    defaults_shown = 0
    for section, keys in documented.items():
        for key, value in keys.items():
            default = _setting_default(section, key)
            if (key, value) not in commented or default is None:
                continue  # a value to set, or an example where the default is derived
            shown = tomllib.loads(f"v = {value}")["v"]
            assert shown == default, f"[{section}].{key}: shows {shown!r}, default is {default!r}"
            defaults_shown += 1
    assert defaults_shown >= 20


def test_the_compose_config_seeds_the_sandbox_and_users_like_dev() -> None:
    dev, compose = _toml(CONFIG_DIR / "dev.toml"), _toml(COMPOSE_TOML)
    for table in ("tenants", "clusters", "ingesters", "destinations", "api_keys"):
        assert compose["sandbox"][table] == dev["sandbox"][table], f"sandbox.{table} differs"
    assert compose["dev"]["users"] == dev["dev"]["users"]


@pytest.mark.e2e
def test_serving_the_production_example_without_its_secret_file_exits_2_naming_the_key() -> None:
    result = subprocess.run(
        [str(BFF_SCRIPT), "serve", "--config", str(PRODUCTION_EXAMPLE), "--port", "0"],
        cwd=REPO,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "bff: configuration error: [oidc].client_secret_file: cannot read "
        "/run/secrets/flows-bff/oidc-client-secret: No such file or directory "
        f"(in {PRODUCTION_EXAMPLE})\n"
    )


def _doc_section(page: str, title: str) -> str:
    """A ``## title`` section of a page under ``docs/``."""
    text = (REPO / "docs" / page).read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


PROVIDER_EXAMPLES = [
    (name, example.group(1))
    for name, body in re.findall(
        r"^## (.+?)\n(.*?)(?=^## |\Z)",
        (REPO / "docs" / "providers.md").read_text(),
        flags=re.MULTILINE | re.DOTALL,
    )
    if (example := re.search(r"```toml\n(.*?)```", body, flags=re.DOTALL))
]


def test_the_readme_has_settings_for_each_identity_provider() -> None:
    assert [name for name, _ in PROVIDER_EXAMPLES] == [
        "Keycloak",
        "Microsoft Entra ID",
        "Okta",
        "Auth0",
    ]


@pytest.mark.parametrize(
    "example", [text for _, text in PROVIDER_EXAMPLES], ids=[n for n, _ in PROVIDER_EXAMPLES]
)
def test_each_identity_provider_example_of_the_readme_loads(example: str, tmp_path: Path) -> None:
    # The examples name the secret's file as a deployment would; here it is a file of the test's.
    secret = tmp_path / "oidc-client-secret"
    secret.write_text("a-client-secret\n")
    text = example.replace("/run/secrets/flows-bff/oidc-client-secret", str(secret))
    path = tmp_path / "provider.toml"
    path.write_text(text)
    settings = load_settings(path, environ={})
    parsed = tomllib.loads(example)
    assert settings.oidc.issuer == parsed["oidc"]["issuer"]
    assert settings.oidc.client_secret == "a-client-secret"
    assert settings.upstream.credential == parsed["upstream"]["credential"]


def _blocks(section: str, language: str) -> list[str]:
    """The fenced ``language`` blocks of a section, list-item indentation removed."""
    return [
        textwrap.dedent(body)
        for _, body in re.findall(
            rf"^( *)```{language}\n(.*?)^\1```$", section, flags=re.MULTILINE | re.DOTALL
        )
    ]


PRODUCTION_SHAPE = _doc_section("operating.md", "Production shape")


def test_the_production_shape_commands_run_as_written_from_a_clone(tmp_path: Path) -> None:
    # A clone after `make dev`: the commands run from its root, with its .venv.
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    script = "\n".join(_blocks(PRODUCTION_SHAPE, "sh"))
    assert script.count(".venv/bin/bff") >= 4
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    keys = tmp_path / ".data" / "keys"
    outcome = [line.split(":")[0] for line in result.stdout.splitlines()]
    assert outcome == [
        f"wrote {keys / 'session-keys'}",
        f"wrote {keys / 'upstream-signing-key.pem'}",
        "ok",
        "staged new key "
        + result.stdout.splitlines()[3].split()[3]
        + f" in {keys / 'session-keys'}",
        "ok",
        "promoted key " + result.stdout.splitlines()[5].split()[2] + f" in {keys / 'session-keys'}",
    ]
    ring = (keys / "session-keys").read_text().splitlines()
    staged = result.stdout.splitlines()[3].split()[3]
    # Staged, then promoted: the new key first, the first one second, both open.
    assert len(ring) == 2 and ring[0].split()[0] == staged
    assert (keys / "session-keys").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("example", _blocks(PRODUCTION_SHAPE, "toml"), ids=["tls", "sentinel"])
def test_each_redis_example_of_the_production_shape_loads(example: str, tmp_path: Path) -> None:
    path = tmp_path / "sessions.toml"
    path.write_text(example)
    environ = {**_stand_in_files(path, tmp_path), "BFF__OIDC__CLIENT_SECRET": "a-client-secret"}
    settings = load_settings(path, environ=environ)
    for key, value in tomllib.loads(example)["sessions"].items():
        # A file's path is the stand-in's, whose content the twin of a secret file holds.
        shown = environ.get(f"BFF__SESSIONS__{key.upper()}", value)
        assert getattr(settings.sessions, key) == shown, key
    if "redis_sentinels" in example:
        assert settings.sessions.redis_sentinel_password == (
            "stand-in for [sessions].redis_sentinel_password_file"
        )
