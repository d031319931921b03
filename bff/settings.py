"""The BFF's one settings object, loaded from TOML and the environment.

A file under ``config/`` is chosen with ``--config`` or ``BFF_CONFIG``. Every key can be overridden
by an environment variable ``BFF__SECTION__KEY`` (for example ``BFF__UPSTREAM__BASE_URL``), and
every secret can be read from a file named by the key's ``*_file`` twin (``client_secret_file``),
so that secrets never have to be written into a config file. Unknown keys and bad values fail at
start with a message that names the key.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "dev.toml"
ENV_PREFIX = "BFF__"


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class BffSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    public_origin: str = "http://127.0.0.1:8000"
    """Origin the dashboard is served from; unsafe requests must come from it or allowed_origins."""
    allowed_origins: list[str] = []
    max_body_bytes: int = 64 * 1024
    rate_limit_per_minute: int = 600
    """API calls one caller (subject) may make per minute, across instances; 0 turns it off."""
    console: bool = False
    """Serve the development console (a static page driving this API) at ``/``."""
    log_level: str = "info"


class UpstreamSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    base_url: str = "http://127.0.0.1:8001"
    credential: Literal["relay", "internal-jwt"] = "internal-jwt"
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    total_timeout: float = 15.0
    max_connections: int = 100
    max_attempts: int = 3
    """Attempts per upstream call, the first included; only safe calls are retried."""
    retry_backoff_seconds: float = 0.1
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class InternalJwtSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    issuer: str | None = None
    """Defaults to the BFF's public origin."""
    audience: str = "zen-backend"
    ttl_seconds: float = 300.0
    signing_key_file: str | None = None
    """PEM EC P-256 private key; without one an ephemeral key is generated (development only)."""


class OidcSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    issuer: str = "http://127.0.0.1:8002"
    client_id: str = "flows-bff-dev"
    client_secret: str = ""
    client_secret_file: str | None = None
    scopes: list[str] = msgspec.field(
        default_factory=lambda: ["openid", "profile", "email", "offline_access"]
    )
    tenants_claim: str = "zen_tenants"
    bearer_audience: str | None = None
    """Audience required of bearer JWTs; defaults to client_id."""
    refresh_margin_seconds: float = 60.0


class SessionsSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    redis_max_connections: int = 50
    idle_timeout_seconds: float = 30 * 60
    absolute_timeout_seconds: float = 8 * 60 * 60


class CacheSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    ttl_seconds: float = 2.0
    """Micro-cache of GET responses; 0 disables it."""
    lookup_ttl_seconds: float = 30.0
    """Clusters of a tenant, and source/destination names of a cluster."""
    max_entries: int = 10_000


class Settings(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Everything the BFF needs to start. Build with :func:`load_settings` or directly in tests."""

    bff: BffSection = BffSection()
    upstream: UpstreamSection = UpstreamSection()
    internal_jwt: InternalJwtSection = InternalJwtSection()
    oidc: OidcSection = OidcSection()
    sessions: SessionsSection = SessionsSection()
    cache: CacheSection = CacheSection()

    @property
    def allowed_origins(self) -> frozenset[str]:
        return frozenset([_origin(self.bff.public_origin), *map(_origin, self.bff.allowed_origins)])

    @property
    def secure_cookies(self) -> bool:
        return urlsplit(self.bff.public_origin).scheme == "https"


_SECTIONS = {name for name in Settings.__struct_fields__}


def load_settings(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read a TOML file (default: ``BFF_CONFIG`` or ``config/dev.toml``) plus env overrides."""
    environ = os.environ if environ is None else environ
    path = Path(path or environ.get("BFF_CONFIG") or DEFAULT_CONFIG)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    data = {name: dict(raw.get(name, {})) for name in _SECTIONS}
    _apply_env(data, environ)
    _resolve_files(data, base=path.parent)
    return settings_from_mapping(data)


def settings_from_mapping(data: Mapping[str, Any]) -> Settings:
    """Validate a plain mapping (sections of keys) into :class:`Settings`."""
    try:
        settings = msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_config_message(str(exc))) from exc
    _check(settings)
    return settings


def _apply_env(data: dict[str, dict[str, Any]], environ: Mapping[str, str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if section not in _SECTIONS or not key:
            raise ConfigError(f"{name}: no such setting (expected BFF__SECTION__KEY)")
        field_type = _field_type(section, key)
        if field_type is None:
            raise ConfigError(f"{name}: no key {key!r} in section [{section}]")
        data[section][key] = value.split(",") if field_type == "list" else value


def _field_type(section: str, key: str) -> str | None:
    section_type = next(f.type for f in msgspec.structs.fields(Settings) if f.name == section)
    for field in msgspec.structs.fields(section_type):
        if field.name == key:
            return "list" if typing.get_origin(field.type) is list else "scalar"
    return None


# Keys naming files: secrets are read into their twin key at load; the others are read when the
# app starts, and are checked here so that a wrong path fails at load, naming its key.
_SECRET_FILE_KEYS = {("oidc", "client_secret_file"): "client_secret"}
_FILE_KEYS = (
    *_SECRET_FILE_KEYS,
    ("upstream", "ca_file"),
    ("upstream", "cert_file"),
    ("upstream", "key_file"),
    ("internal_jwt", "signing_key_file"),
)


def _resolve_files(data: dict[str, dict[str, Any]], *, base: Path) -> None:
    """Relative paths are relative to the config file; every named file must be readable."""
    for section, key in _FILE_KEYS:
        value = data[section].get(key)
        if not value:
            continue
        path = base / str(value)
        try:
            content = path.read_text().strip() if (section, key) in _SECRET_FILE_KEYS else None
            if content is None:
                path.open("rb").close()
        except OSError as exc:
            raise ConfigError(f"[{section}].{key}: cannot read {path}: {exc.strerror}") from exc
        data[section][key] = str(path)
        if content is not None:
            data[section][_SECRET_FILE_KEYS[section, key]] = content


def _config_message(message: str) -> str:
    # msgspec says "... - at `$.oidc.client_id`"; turn the path into the TOML key it names.
    text, _, where = message.partition(" - at `$.")
    if not where:
        return message
    section, _, key = where.rstrip("`").partition(".")
    return f"[{section}].{key}: {text}" if key else f"[{section}]: {text}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


# What both logging and uvicorn accept, as uvicorn spells them.
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check(settings: Settings) -> None:
    for key, url in (
        ("[bff].public_origin", settings.bff.public_origin),
        ("[upstream].base_url", settings.upstream.base_url),
        ("[oidc].issuer", settings.oidc.issuer),
    ):
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigError(f"{key}: expected an http(s) URL, got {url!r}")
    origin = urlsplit(settings.bff.public_origin)
    if origin.scheme == "http" and not _is_loopback(origin.hostname or ""):
        # Over plain http the session cookie cannot be Secure: development on loopback only.
        raise ConfigError("[bff].public_origin: use https; plain http is for loopback only")
    if settings.sessions.backend == "redis" and not settings.sessions.redis_url:
        raise ConfigError("[sessions].redis_url: required when [sessions].backend = 'redis'")
    if settings.cache.ttl_seconds < 0:
        raise ConfigError("[cache].ttl_seconds: must be >= 0")
    if settings.bff.log_level not in _LOG_LEVELS:
        raise ConfigError(f"[bff].log_level: must be one of {', '.join(_LOG_LEVELS)}")
    # What the upstream client, the session stores and the token minter refuse at start.
    upstream, sessions = settings.upstream, settings.sessions
    for key, value, low in (
        ("[upstream].connect_timeout", upstream.connect_timeout, 0.0),
        ("[upstream].read_timeout", upstream.read_timeout, 0.0),
        ("[upstream].total_timeout", upstream.total_timeout, 0.0),
        ("[sessions].idle_timeout_seconds", sessions.idle_timeout_seconds, 0.0),
        ("[sessions].absolute_timeout_seconds", sessions.absolute_timeout_seconds, 0.0),
    ):
        if not value > low:
            raise ConfigError(f"{key}: must be > {low:g}")
    for key, value, low in (
        ("[upstream].max_attempts", upstream.max_attempts, 1),
        ("[upstream].max_connections", upstream.max_connections, 1),
        ("[upstream].retry_backoff_seconds", upstream.retry_backoff_seconds, 0),
        ("[internal_jwt].ttl_seconds", settings.internal_jwt.ttl_seconds, 1),
        # No room in the caches means an error logged at every load; no connection, a hang.
        ("[cache].max_entries", settings.cache.max_entries, 1),
        ("[sessions].redis_max_connections", sessions.redis_max_connections, 1),
        ("[bff].rate_limit_per_minute", settings.bff.rate_limit_per_minute, 0),
    ):
        if not value >= low:
            raise ConfigError(f"{key}: must be >= {low}")
    if not 1024 <= settings.bff.max_body_bytes <= 16 * 1024 * 1024:
        raise ConfigError("[bff].max_body_bytes: must be between 1 KiB and 16 MiB")
    if (settings.upstream.cert_file is None) != (settings.upstream.key_file is None):
        raise ConfigError("[upstream].cert_file and [upstream].key_file go together (mTLS)")
