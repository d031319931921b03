"""The BFF's one settings object, loaded from TOML and the environment.

A file under ``config/`` is chosen with ``--config`` or ``BFF_CONFIG``. Every key can be overridden
by an environment variable ``BFF__SECTION__KEY`` (for example ``BFF__UPSTREAM__BASE_URL``), and
every secret can be read from a file named by the key's ``*_file`` twin (``client_secret_file``),
so that secrets never have to be written into a config file. Bad values fail at start with a
message that names the file and the key.

Nothing is guessed: an unknown section, key or ``BFF__`` variable is an error naming it and the
nearest valid name. The same files also hold the tables of other programs, listed in
:data:`FOREIGN_SECTIONS`, which the BFF skips.

Without ``--config`` or ``BFF_CONFIG`` the embedded default is read, :data:`DEFAULT_CONFIG`: the
development configuration, shipped inside the package so that an installed wheel starts with no
file of its own.

It stays one file, past the usual size, because its parts share one vocabulary: the sources
(file, environment, secret files), the unknown-name errors and the value checks (:data:`_CHECKS`)
all name keys as the section structs declare them and fail with :class:`ConfigError`.
"""

from __future__ import annotations

import difflib
import importlib.resources
import importlib.util
import ipaddress
import os
import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

# bff/dev.toml links to config/dev.toml: the repository keeps one file, the wheel gets a copy.
# Resolved, so that in a checkout messages name config/dev.toml, the file to edit.
DEFAULT_CONFIG = Path(str(importlib.resources.files("bff") / "dev.toml")).resolve()
ENV_PREFIX = "BFF__"

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8000
"""Where ``bff serve`` and ``bff dev`` listen unless told otherwise."""
DEV_UPSTREAM_PORT = 8001
"""The sandbox backend of the development stack (``sandbox.config.DEFAULT_PORT``)."""
DEV_PROVIDER_PORT = 8002
"""The development OpenID provider of the development stack."""
FOREIGN_SECTIONS = ("sandbox", "dev")
"""Top-level tables of the same TOML files that belong to other programs, skipped by the BFF:
``[sandbox]`` is the sandbox backend's (``sandbox/config.py``), ``[dev]`` holds the demo users of
the development identity provider (``bff dev``)."""


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class BffSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    public_origin: str = f"http://{LOOPBACK}:{DEFAULT_PORT}"
    """Origin the dashboard is served from; unsafe requests must come from it or allowed_origins."""
    allowed_origins: list[str] = []
    max_body_bytes: int = 64 * 1024
    rate_limit_per_minute: int = 600
    """API calls one caller (subject) may make per minute, across instances; 0 turns it off."""
    console: bool = False
    """Serve the development console (a static page driving this API) at ``/``."""
    trusted_proxies: list[str] = []
    """Addresses or networks (CIDR) of the reverse proxies in front of the gateway: only from
    them is ``X-Forwarded-For`` believed when naming a caller's address (audit ``client_ip``)."""


class BreakerSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[upstream.breaker]``: see :class:`upstream_client.BreakerConfig`."""

    failure_threshold: int = 5
    """Consecutive failed upstream attempts (connection errors, timeouts, 5xx) that open it."""
    window_seconds: float = 10.0
    """Failures further apart than this do not add up."""
    open_seconds: float = 1.0
    """How long an opened circuit fails fast before a probe; doubled after each failed probe."""
    max_open_seconds: float = 30.0
    half_open_probes: int = 1
    """Probe calls let through when half-open; that many successes close the circuit."""


class UpstreamSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    base_url: str = f"http://{LOOPBACK}:{DEV_UPSTREAM_PORT}"
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
    breaker: BreakerSection = BreakerSection()


class InternalJwtSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    issuer: str | None = None
    """Defaults to the BFF's public origin."""
    audience: str = "zen-backend"
    ttl_seconds: float = 300.0
    signing_key_file: str | None = None
    """PEM EC P-256 private key; without one an ephemeral key is generated (development only)."""


class OidcSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    issuer: str = f"http://{LOOPBACK}:{DEV_PROVIDER_PORT}"
    client_id: str = "flows-bff-dev"
    client_secret: str = ""
    client_secret_file: str | None = None
    client_auth: Literal[
        "client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth"
    ] = "client_secret_basic"
    """How the gateway proves itself at the provider's token endpoint: with the secret (HTTP
    Basic or in the form), a signed assertion (``client_key_file``), or a TLS client
    certificate (``client_cert_file`` and ``client_key_file``)."""
    client_key_file: str | None = None
    """PEM private keys (EC or RSA): ``private_key_jwt`` signs with the first and publishes all
    at ``/api/bff/v1/.well-known/client-jwks.json``; ``tls_client_auth``: the certificate's key."""
    client_cert_file: str | None = None
    """``tls_client_auth``: the client certificate (PEM) registered at the provider."""
    ca_file: str | None = None
    """CA certificates (PEM) to verify the provider's TLS certificates with, instead of the
    system's: for a provider (or its mTLS front) under a private CA."""
    par: Literal["auto", "always", "never"] = "never"
    """Pushed authorization requests (RFC 9126): the sign-in's parameters go to the provider
    over the back channel, and the browser carries only ``client_id`` and ``request_uri``.
    ``auto``: when the provider offers it (always when it requires it); ``always``: refuse to
    sign in without it; ``never`` (the default): the parameters travel in the browser's URL."""
    dpop: bool = False
    """Sender-constrained tokens (RFC 9449): each session's tokens are bound to a key of its own,
    and every call that presents them (refresh, userinfo, the backend in ``relay`` mode) carries
    a proof made with it. The provider must offer DPoP with ES256."""
    profile: Literal["none", "fapi2"] = "none"
    """``fapi2``: the FAPI 2.0 Security Profile. Pushed requests always, PKCE S256,
    ``private_key_jwt`` or ``tls_client_auth``, DPoP, and the RFC 9207 ``iss`` check; the
    gateway refuses to start with anything weaker, naming the setting."""
    scopes: list[str] = msgspec.field(
        default_factory=lambda: ["openid", "profile", "email", "offline_access"]
    )
    tenants_claim: str = "zen_tenants"
    bearer_audience: str | None = None
    """The audience a bearer token must name (the API's, as the provider puts it in access
    tokens). Unset: bearer tokens are refused. Never the client id alone: ID tokens name it."""
    refresh_margin_seconds: float = 60.0
    prompt: str | None = None
    """``prompt`` sent with every sign-in. Unset: ``consent`` when ``offline_access`` is among
    the scopes (OpenID Connect Core 11: without it a provider may issue no refresh token)."""
    extra_authorization_params: dict[str, str] = {}
    """Sent as they are with every sign-in: ``resource``, ``audience``, ``acr_values``…"""
    post_logout_redirect: str | None = None
    """Where the provider sends the browser after sign-out (register it there); default: the
    public origin's ``/``."""
    end_session_id_token_hint: bool = False
    """Put the ID token in the end-session URL (``id_token_hint``), for providers that need it.
    Off, the URL carries no token: it names the client (``client_id``) instead."""
    end_session_logout_hint: Literal["none", "sub", "sid"] = "none"
    """Name the user's session in the end-session URL as ``logout_hint``, as the provider
    understands it: ``sub`` (the subject) or ``sid`` (the provider's session id, as Auth0 takes
    it)."""
    timeout_seconds: float = 3.0
    """The longest wait for the provider (discovery, keys, tokens, userinfo, revocation)."""


class SessionsSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    """``redis://`` or ``rediss://`` (TLS). Beside Sentinels it is optional and gives only the
    scheme, the credentials and the database."""
    redis_ca_file: str | None = None
    """With ``rediss://``: the CA that signed Redis's certificate (default: the system's)."""
    redis_cert_file: str | None = None
    """With ``rediss://``: a client certificate, for a Redis that asks for one (with key_file)."""
    redis_key_file: str | None = None
    redis_sentinels: list[str] = msgspec.field(default_factory=list)
    """``["host:port", …]``: find the primary through these Sentinels instead of redis_url."""
    redis_sentinel_service: str | None = None
    """The name the Sentinels know the primary by (``sentinel monitor <name> …``)."""
    redis_sentinel_password: str | None = None
    """For Sentinels that ask for one (``requirepass`` on the Sentinels); or the _file twin."""
    redis_sentinel_password_file: str | None = None
    encryption_keys_file: str | None = None
    """The key ring that seals what is kept in Redis (AES-256-GCM): one key a line,
    ``<id> <base64 of 32 bytes>``, the first seals, all open. ``bff keys`` makes it; required
    with ``backend = "redis"``."""
    near_cache_seconds: float = 10.0
    """With Redis: how long this instance may answer from its own copy of a session record
    (dropped at once, everywhere, when the session changes or ends); 0 turns the copy off."""
    near_cache_max_entries: int = 10_000
    touch_interval_seconds: float = 30.0
    """With Redis: a session's idle expiry is written at most this often, so it may end up to
    this long before ``idle_timeout_seconds`` of inactivity; 0 writes it at every request."""
    redis_max_connections: int = 50
    redis_timeout_seconds: float = 1.0
    """Longest wait for Redis: to connect, for an answer, for a free pooled connection. A Redis
    that stops answering costs a request at most about this long."""
    redis_health_check_seconds: int = 15
    """A pooled connection idle this long is pinged before use."""
    idle_timeout_seconds: float = 30 * 60
    absolute_timeout_seconds: float = 8 * 60 * 60
    max_pending_sign_ins: int = 10_000
    """Sign-ins started and not finished (each kept 10 minutes), in all; more are refused."""
    max_pending_sign_ins_per_client: int = 20
    """The same, per client address (read through ``[bff].trusted_proxies``)."""


class CacheSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    ttl_seconds: float = 2.0
    """Micro-cache of GET responses; 0 disables it."""
    lookup_ttl_seconds: float = 30.0
    """Clusters of a tenant, and source/destination names of a cluster."""
    max_entries: int = 10_000


class AuditSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    sink: Literal["stdout", "file"] = "stdout"
    """Where audit events go: standard output (marked ``"log": "audit"``) or an append-only file."""
    path: str | None = None
    """The audit file, for ``sink = "file"``."""
    fsync: bool = True
    """With a file sink, each event is on disk before the write it describes goes upstream."""


class SessionEventsSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``GET /api/bff/v1/auth/session/events``: a dashboard tab follows its session live."""

    heartbeat_seconds: float = 15.0
    """A comment line this often on a quiet stream, so that proxies keep it open and a browser
    that went away is noticed."""
    expiring_seconds: float = 120.0
    """``expiring`` is sent this long before the session ends; 0 never sends it."""
    max_streams_per_session: int = 5
    """Streams one session (one browser, its tabs together) may hold open. Over HTTP/1.1 a
    browser opens at most six connections to a host: five leave one for the dashboard's calls."""
    max_streams: int = 1000
    """Streams this instance holds open at once; each is a connection (a file descriptor)."""


class ServerSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    shutdown_grace_seconds: int = 10
    """On SIGTERM: readiness turns 503 at once, no new connections are accepted, and requests in
    flight get this long to finish before their connections are closed."""


class LogSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    format: Literal["json", "text"] = "json"
    """One JSON object per line (``bff serve``), or text for a terminal (``bff dev`` sets it)."""
    level: str = "info"
    access: bool = True
    """One access line per request."""


class TracingSection(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    otlp_endpoint: str | None = None
    """OTLP/HTTP traces URL (``http://collector:4318/v1/traces``); needs the ``otel`` extra.
    Without it trace ids are still propagated and logged, and no span is recorded."""
    service_name: str = "flows-bff"


class Settings(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Everything the BFF needs to start. Build with :func:`load_settings` or directly in tests."""

    bff: BffSection = BffSection()
    upstream: UpstreamSection = UpstreamSection()
    internal_jwt: InternalJwtSection = InternalJwtSection()
    oidc: OidcSection = OidcSection()
    sessions: SessionsSection = SessionsSection()
    session_events: SessionEventsSection = SessionEventsSection()
    cache: CacheSection = CacheSection()
    audit: AuditSection = AuditSection()
    server: ServerSection = ServerSection()
    log: LogSection = LogSection()
    tracing: TracingSection = TracingSection()

    @property
    def allowed_origins(self) -> frozenset[str]:
        return frozenset([_origin(self.bff.public_origin), *map(_origin, self.bff.allowed_origins)])

    @property
    def secure_cookies(self) -> bool:
        return urlsplit(self.bff.public_origin).scheme == "https"


def _tables(struct: type[_Section], prefix: str = "") -> dict[str, type[_Section]]:
    """Every table of the settings by dotted name (``upstream``, ``upstream.breaker``…)."""
    tables: dict[str, type[_Section]] = {}
    for field in msgspec.structs.fields(struct):
        if isinstance(field.type, type) and issubclass(field.type, _Section):
            name = f"{prefix}{field.name}"
            tables[name] = field.type
            tables.update(_tables(field.type, f"{name}."))
    return tables


TABLES = _tables(Settings)
"""The settings' tables by dotted name, as in the TOML file: ``[upstream.breaker]``."""
_SECTIONS: tuple[str, ...] = Settings.__struct_fields__
_KEYS: dict[str, tuple[str, ...]] = {
    name: tuple(key for key in table.__struct_fields__ if f"{name}.{key}" not in TABLES)
    for name, table in TABLES.items()
}
_LIST_KEYS = {
    (name, key.name)
    for name, table in TABLES.items()
    for key in msgspec.structs.fields(table)
    if typing.get_origin(key.type) is list
}
_DICT_KEYS = {
    (name, key.name)
    for name, table in TABLES.items()
    for key in msgspec.structs.fields(table)
    if typing.get_origin(key.type) is dict
}


def config_file(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The file :func:`load_settings` reads: ``path``, else ``BFF_CONFIG``, else the default."""
    environ = os.environ if environ is None else environ
    return Path(path or environ.get("BFF_CONFIG") or DEFAULT_CONFIG)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    for_keys: bool = False,
    more_checks: Callable[[Settings], None] | None = None,
) -> Settings:
    """Read a TOML file (default: ``BFF_CONFIG`` or ``config/dev.toml``) plus env overrides.

    Every :class:`ConfigError` names the key and then the file (and the variable that set the
    key, if one did): ``[cache].ttl: unknown key; … (in config/prod.toml)``. So do the errors of
    ``more_checks``, run on the loaded settings (``bff serve`` and ``check-config`` parse the
    key files named there).

    ``for_keys``: only what ``bff keys`` needs, the paths of the files it names: names are
    checked, but no file is read (key files need not exist yet) and no value is.
    """
    environ = os.environ if environ is None else environ
    path = config_file(path, environ)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    variables: dict[str, str] = {}
    try:
        own = {name: table for name, table in raw.items() if name not in FOREIGN_SECTIONS}
        _check_names(own)
        data: dict[str, dict[str, Any]] = {name: dict(own.get(name, {})) for name in _SECTIONS}
        variables = _apply_env(data, environ)
        _resolve_files(data, base=path.parent, read=not for_keys)
        settings = _convert(data, check=not for_keys)
        if more_checks is not None and not for_keys:
            more_checks(settings)
    except ConfigError as exc:
        raise ConfigError(_in_file(path, str(exc), variables)) from None
    return settings


def _in_file(path: Path, message: str, variables: Mapping[str, str]) -> str:
    """``message`` as :func:`load_settings` reports it: followed by the file, and by the variable
    that set the key it starts with (``[oidc].client_secret: …``) when one did."""
    variable = variables.get(message.partition(":")[0])
    return f"{message} ({f'set by {variable}, with' if variable else 'in'} {path})"


def settings_from_mapping(data: Mapping[str, Any]) -> Settings:
    """Validate a plain mapping (sections of keys) into :class:`Settings`."""
    _check_names(data)
    return _convert(data)


def _check_names(data: Mapping[str, Any]) -> None:
    """Every section must be the BFF's and a table, every key one of its section's."""
    for section, table in data.items():
        if section not in _SECTIONS:
            hint = _nearest(section, _SECTIONS, show="[{}]")
            raise ConfigError(f"unknown section [{section}]; {hint}")
        _check_table(section, table)


def _check_table(name: str, table: object) -> None:
    if not isinstance(table, Mapping):
        kind = type(table).__name__
        raise ConfigError(f"[{name}]: expected a table, got {kind} {table!r}")
    for key, value in table.items():
        if f"{name}.{key}" in TABLES:
            _check_table(f"{name}.{key}", value)
        elif key not in _KEYS[name]:
            valid = _KEYS[name] + tuple(t.rpartition(".")[2] for t in TABLES if _parent(t) == name)
            raise ConfigError(f"[{name}].{key}: unknown key; {_nearest(key, valid)}")


def _parent(table: str) -> str:
    return table.rpartition(".")[0]


def _nearest(name: str, valid: tuple[str, ...], *, show: str = "{}") -> str:
    close = difflib.get_close_matches(name.lower(), valid, n=1)
    if close:
        return f"did you mean {show.format(close[0])}?"
    return "expected one of " + ", ".join(show.format(each) for each in valid)


def _convert(data: Mapping[str, Any], *, check: bool = True) -> Settings:
    try:
        settings = msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_config_message(str(exc))) from exc
    if check:
        _check(settings)
    return settings


def _apply_env(data: dict[str, dict[str, Any]], environ: Mapping[str, str]) -> dict[str, str]:
    """Set the keys that ``BFF__`` variables name; returns the variable of each key set, by its
    label (``[upstream.breaker].open_seconds``)."""
    applied: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        table, target = section, data.get(section)
        # BFF__UPSTREAM__BREAKER__OPEN_SECONDS names the key open_seconds of [upstream.breaker].
        while target is not None and "__" in key and f"{table}.{key.split('__')[0]}" in TABLES:
            inner, _, key = key.partition("__")
            table = f"{table}.{inner}"
            target = target.setdefault(inner, {})
        if f"{table}.{key}" in TABLES:
            example = _variable(f"{table}.{key}", _KEYS[f"{table}.{key}"][0])
            raise ConfigError(f"{name}: names the table [{table}.{key}]; set its keys ({example})")
        if target is None or key not in _KEYS.get(table, ()):
            raise ConfigError(f"{name}: unknown variable; {_nearest_variable(table, key)}")
        if (table, key) in _LIST_KEYS:
            target[key] = value.split(",")
        elif (table, key) in _DICT_KEYS:
            target[key] = _pairs(name, value)
        else:
            target[key] = value
        applied[_label(f"{table}.{key}")] = name
    return applied


def _pairs(name: str, value: str) -> dict[str, str]:
    """``audience=https://api.example,resource=urn:flows``: a table in one variable."""
    pairs: dict[str, str] = {}
    for item in filter(None, value.split(",")):
        key, equals, text = item.partition("=")
        if not equals or not key.strip():
            raise ConfigError(f"{name}: expected name=value pairs separated by commas")
        pairs[key.strip()] = text
    return pairs


def _variable(table: str, key: str) -> str:
    return f"{ENV_PREFIX}{table.replace('.', '__')}__{key}".upper()


def _nearest_variable(section: str, key: str) -> str:
    if section not in TABLES:
        close = difflib.get_close_matches(section, _SECTIONS, n=1)
        if not close:
            sections = ", ".join(s.upper() for s in _SECTIONS)
            return f"expected {ENV_PREFIX}SECTION__KEY with SECTION one of {sections}"
        section = close[0]
    keys = _KEYS[section]
    if key not in keys:
        close = difflib.get_close_matches(key, keys, n=1)
        if not close:
            return "expected one of " + ", ".join(_variable(section, k) for k in keys)
        key = close[0]
    return f"did you mean {_variable(section, key)}?"


# Keys naming files: secrets are read into their twin key at load; the others are read when the
# app starts, and are checked here so that a wrong path fails at load, naming its key.
_SECRET_FILE_KEYS = {
    ("oidc", "client_secret_file"): "client_secret",
    ("sessions", "redis_sentinel_password_file"): "redis_sentinel_password",
}
_FILE_KEYS = (
    *_SECRET_FILE_KEYS,
    ("upstream", "ca_file"),
    ("upstream", "cert_file"),
    ("upstream", "key_file"),
    ("sessions", "redis_ca_file"),
    ("sessions", "redis_cert_file"),
    ("sessions", "redis_key_file"),
    ("sessions", "encryption_keys_file"),
    ("internal_jwt", "signing_key_file"),
    ("oidc", "client_key_file"),
    ("oidc", "client_cert_file"),
    ("oidc", "ca_file"),
)


def _resolve_files(data: dict[str, dict[str, Any]], *, base: Path, read: bool = True) -> None:
    """Relative paths are relative to the config file; every named file must be readable (unless
    not to be ``read``: ``bff keys``)."""
    for section, key in _FILE_KEYS:
        value = data[section].get(key)
        if not value:
            continue
        path = base / str(value)
        if not read:
            data[section][key] = str(path)
            continue
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


# Authorization request parameters the gateway sets on every sign-in: not configurable.
_PROTOCOL_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "dpop_jkt",
        "request_uri",
    }
)
# What both logging and uvicorn accept, as uvicorn spells them.
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

_Check = Callable[[Settings], None]
"""One check of loaded settings: it raises :class:`ConfigError` naming the key, or returns."""


def _check(settings: Settings) -> None:
    for check in _CHECKS:
        check(settings)


def _lookup(settings: Settings, key: str) -> Any:
    """The value of a dotted key: ``upstream.breaker.open_seconds``."""
    value: Any = settings
    for name in key.split("."):
        value = getattr(value, name)
    return value


def _label(key: str) -> str:
    """A dotted key as messages name it: ``[upstream.breaker].open_seconds``."""
    table, _, name = key.rpartition(".")
    return f"[{table}].{name}"


def _rule(key: str, wrong: Callable[[Any], bool], requirement: str) -> _Check:
    """The value of ``key`` must not be ``wrong``; ``{value!r}`` in the requirement shows it."""

    def check(settings: Settings) -> None:
        if wrong(value := _lookup(settings, key)):
            raise ConfigError(f"{_label(key)}: {requirement.format(value=value)}")

    return check


def _http_url(key: str, *, host: bool = True) -> _Check:
    """An http(s) URL, with a host unless ``host`` is false; unset (``None``) is fine."""

    def wrong(url: str | None) -> bool:
        if url is None:
            return False
        parts = urlsplit(url)
        return parts.scheme not in {"http", "https"} or (host and not parts.netloc)

    return _rule(key, wrong, "expected an http(s) URL, got {value!r}")


def _above(key: str, low: float) -> _Check:
    return _rule(key, lambda value: not value > low, f"must be > {low:g}")


def _at_least(key: str, low: float) -> _Check:
    return _rule(key, lambda value: not value >= low, f"must be >= {low}")


def _one_of(key: str, allowed: tuple[str, ...]) -> _Check:
    return _rule(key, lambda value: value not in allowed, f"must be one of {', '.join(allowed)}")


def _required_when(key: str, when: str, equals: str) -> _Check:
    def check(settings: Settings) -> None:
        if _lookup(settings, when) == equals and not _lookup(settings, key):
            raise ConfigError(f"{_label(key)}: required when {_label(when)} = {equals!r}")

    return check


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _https_off_loopback(settings: Settings) -> None:
    origin = urlsplit(settings.bff.public_origin)
    if origin.scheme == "http" and not _is_loopback(origin.hostname or ""):
        # Over plain http the session cookie cannot be Secure: development on loopback only.
        raise ConfigError("[bff].public_origin: use https; plain http is for loopback only")


def _no_protocol_params(settings: Settings) -> None:
    reserved = set(settings.oidc.extra_authorization_params) & _PROTOCOL_PARAMS
    if reserved:
        raise ConfigError(
            f"[oidc].extra_authorization_params: {', '.join(sorted(reserved))} "
            "is set by the gateway itself"
        )


def _proxies_are_networks(settings: Settings) -> None:
    for proxy in settings.bff.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"[bff].trusted_proxies: {proxy!r} is not an IP address or network"
            ) from None


def _otel_installed(settings: Settings) -> None:
    if (
        settings.tracing.otlp_endpoint is not None
        and importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None
    ):
        raise ConfigError(
            "[tracing].otlp_endpoint: needs the otel extra (pip install 'flows-bff[otel]')"
        )


def _breaker_max_open_covers_open(settings: Settings) -> None:
    breaker = settings.upstream.breaker
    if breaker.max_open_seconds < breaker.open_seconds:
        raise ConfigError("[upstream.breaker].max_open_seconds: must be >= open_seconds")


def _mtls_pair(settings: Settings) -> None:
    if (settings.upstream.cert_file is None) != (settings.upstream.key_file is None):
        raise ConfigError("[upstream].cert_file and [upstream].key_file go together (mTLS)")


def _client_credentials(settings: Settings) -> None:
    """The gateway is a confidential client: without its credentials no sign-in can succeed."""
    oidc = settings.oidc
    if oidc.client_auth.startswith("client_secret") and not oidc.client_secret:
        raise ConfigError("[oidc].client_secret: required (set it, or client_secret_file)")
    if oidc.client_auth in {"private_key_jwt", "tls_client_auth"} and not oidc.client_key_file:
        raise ConfigError(
            f"[oidc].client_key_file: required with client_auth = {oidc.client_auth!r}; "
            "bff keys --config FILE makes one"
        )
    if oidc.client_auth == "tls_client_auth" and not oidc.client_cert_file:
        raise ConfigError(
            "[oidc].client_cert_file: required with client_auth = 'tls_client_auth'; "
            "bff keys --config FILE makes a self-signed one"
        )


def _fapi2_profile(settings: Settings) -> None:
    """The FAPI 2.0 Security Profile (5.3): everything it requires of a client, or a refusal."""
    oidc = settings.oidc
    if oidc.profile != "fapi2":
        return
    weaker = [
        f"[oidc].client_auth = {oidc.client_auth!r}: use 'private_key_jwt' or 'tls_client_auth' "
        "(a shared secret is not allowed)"
        if oidc.client_auth.startswith("client_secret")
        else None,
        "[oidc].par = 'never': pushed authorization requests are required (use 'always')"
        if oidc.par == "never"
        else None,
        "[oidc].dpop = false: sender-constrained tokens are required (set dpop = true)"
        if not oidc.dpop
        else None,
    ]
    reasons = [reason for reason in weaker if reason]
    if reasons:
        raise ConfigError('[oidc].profile = "fapi2" needs what it names: ' + "; ".join(reasons))


def _redis_where(settings: Settings) -> None:
    """With Redis: a URL or Sentinels (with the service they watch), each well formed."""
    sessions = settings.sessions
    if sessions.backend != "redis":
        return
    if not sessions.redis_url and not sessions.redis_sentinels:
        raise ConfigError(
            "[sessions].redis_url: required when [sessions].backend = 'redis' "
            "(or [sessions].redis_sentinels with redis_sentinel_service)"
        )
    url = urlsplit(sessions.redis_url or "redis://")
    if url.scheme not in {"redis", "rediss"}:
        raise ConfigError(
            f"[sessions].redis_url: expected redis:// or rediss://, got {sessions.redis_url!r}"
        )
    for sentinel in sessions.redis_sentinels:
        host, _, port = sentinel.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"[sessions].redis_sentinels: {sentinel!r} is not host:port")
    if sessions.redis_sentinels and not sessions.redis_sentinel_service:
        raise ConfigError(
            "[sessions].redis_sentinel_service: required with [sessions].redis_sentinels "
            "(the name the Sentinels monitor the primary by)"
        )
    tls_files = (sessions.redis_ca_file, sessions.redis_cert_file, sessions.redis_key_file)
    if url.scheme != "rediss" and any(tls_files):
        raise ConfigError(
            "[sessions].redis_ca_file, redis_cert_file, redis_key_file: need a rediss:// "
            "[sessions].redis_url (TLS)"
        )
    if (sessions.redis_cert_file is None) != (sessions.redis_key_file is None):
        raise ConfigError("[sessions].redis_cert_file and [sessions].redis_key_file go together")


def _sealed_at_rest(settings: Settings) -> None:
    sessions = settings.sessions
    if sessions.backend == "redis" and not sessions.encryption_keys_file:
        raise ConfigError(
            "[sessions].encryption_keys_file: required when [sessions].backend = 'redis' "
            "(what Redis keeps is sealed with it): name a file there, then make it with "
            "bff keys --config FILE"
        )


def _touch_within_idle(settings: Settings) -> None:
    sessions = settings.sessions
    if not 0 <= sessions.touch_interval_seconds < sessions.idle_timeout_seconds / 2:
        raise ConfigError(
            "[sessions].touch_interval_seconds: must be >= 0 and less than half of "
            "idle_timeout_seconds"
        )


def _heartbeat_under_a_minute(settings: Settings) -> None:
    if not 0 < settings.session_events.heartbeat_seconds < 60:
        raise ConfigError(
            "[session_events].heartbeat_seconds: must be > 0 and under 60: proxies and load "
            "balancers commonly close a connection that is quiet for 60 s (nginx's "
            "proxy_read_timeout, a cloud load balancer's idle timeout), and every browser would "
            "then reconnect over and over"
        )


def _expiring_within_idle(settings: Settings) -> None:
    events, idle = settings.session_events, settings.sessions.idle_timeout_seconds
    if not 0 <= events.expiring_seconds < idle:
        raise ConfigError(
            "[session_events].expiring_seconds: must be >= 0 and less than "
            f"[sessions].idle_timeout_seconds ({idle:g}): a session would be announced as "
            "expiring as soon as it is followed"
        )


def _streams_fit_the_instance(settings: Settings) -> None:
    events = settings.session_events
    if events.max_streams_per_session > events.max_streams:
        raise ConfigError(
            "[session_events].max_streams_per_session: must be <= [session_events].max_streams "
            f"({events.max_streams}): one browser could hold every stream of the instance"
        )


_CHECKS: tuple[_Check, ...] = (
    _http_url("bff.public_origin"),
    _http_url("upstream.base_url"),
    _http_url("oidc.issuer"),
    _https_off_loopback,
    _client_credentials,
    _fapi2_profile,
    _redis_where,
    _sealed_at_rest,
    _required_when("audit.path", "audit.sink", "file"),
    # Not _at_least: this check has always let NaN through, which turns the cache off like 0.
    _rule("cache.ttl_seconds", lambda ttl: ttl < 0, "must be >= 0"),
    _no_protocol_params,
    _one_of("log.level", _LOG_LEVELS),
    _proxies_are_networks,
    _http_url("oidc.post_logout_redirect", host=False),
    _http_url("tracing.otlp_endpoint", host=False),
    _otel_installed,
    # What the upstream client, the session stores and the token minter refuse at start.
    _breaker_max_open_covers_open,
    _above("upstream.connect_timeout", 0),
    _above("upstream.read_timeout", 0),
    _above("upstream.total_timeout", 0),
    _above("upstream.breaker.window_seconds", 0),
    _above("sessions.idle_timeout_seconds", 0),
    _above("sessions.absolute_timeout_seconds", 0),
    _above("server.shutdown_grace_seconds", 0),
    _above("sessions.redis_timeout_seconds", 0),
    _above("oidc.timeout_seconds", 0),
    _at_least("upstream.max_attempts", 1),
    _at_least("upstream.max_connections", 1),
    _at_least("upstream.retry_backoff_seconds", 0),
    _at_least("upstream.breaker.failure_threshold", 1),
    _at_least("upstream.breaker.open_seconds", 0),
    _at_least("upstream.breaker.half_open_probes", 1),
    _at_least("internal_jwt.ttl_seconds", 1),
    # No room in the caches means an error logged at every load; no connection, a hang.
    _at_least("cache.max_entries", 1),
    _at_least("sessions.redis_max_connections", 1),
    _at_least("sessions.redis_health_check_seconds", 0),
    _at_least("sessions.max_pending_sign_ins", 1),
    _at_least("sessions.max_pending_sign_ins_per_client", 1),
    _at_least("sessions.near_cache_seconds", 0),
    _at_least("sessions.near_cache_max_entries", 1),
    _touch_within_idle,
    _heartbeat_under_a_minute,
    _expiring_within_idle,
    _at_least("session_events.max_streams_per_session", 1),
    _at_least("session_events.max_streams", 1),
    _streams_fit_the_instance,
    _at_least("bff.rate_limit_per_minute", 0),
    _rule(
        "bff.max_body_bytes",
        lambda size: not 1024 <= size <= 16 * 1024 * 1024,
        "must be between 1 KiB and 16 MiB",
    ),
    _mtls_pair,
)
"""Every check of loaded settings, in order: the first that fails is the error reported."""
