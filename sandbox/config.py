"""Settings of the sandbox, read from the ``[sandbox]`` tables of a TOML file.

Everything is a small frozen value object. :func:`load_settings` validates the file once, at
start, and every error names the key that is wrong (``sandbox.clusters[1].tenant_id: …``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
DEFAULT_DB = ".data/sandbox.db"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60
DEFAULT_JWKS_MIN_REFETCH_SECONDS = 60.0
DEFAULT_JWKS_MAX_AGE_SECONDS = 600.0
DEFAULT_JWT_AUDIENCE = "zen-backend"
DEFAULT_JWT_ALGORITHMS = ("ES256", "RS256")
# Symmetric and unsigned algorithms are never acceptable for tokens verified with a JWKS.
SUPPORTED_JWT_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
)
DEFAULT_DPOP_ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")
DEFAULT_DPOP_PROOF_MAX_AGE_SECONDS = 60.0
DEFAULT_DPOP_CLOCK_SKEW_SECONDS = 5.0
DEFAULT_DPOP_REPLAY_CACHE_SIZE = 100_000
DEFAULT_DPOP_NONCE_ROTATION_SECONDS = 300.0
KNOWN_SCOPES = frozenset(
    {"read:delivery-flows", "write:delivery-flows", "admin:delivery-flows", "read:*"}
)


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid; the message names the key."""


class Tenant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tenant of the sandbox."""

    id: str
    name: str


class Cluster(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A cluster (data plane) that belongs to one tenant."""

    id: str
    tenant_id: str
    name: str
    region: str
    status: str = "active"


class Ingester(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An endpoint (source receiver, ``ing_…``) in one cluster."""

    id: str
    tenant_id: str
    cluster_id: str
    name: str
    type: str


class Destination(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A target (delivery destination, ``dest_…``) in one cluster."""

    id: str
    tenant_id: str
    cluster_id: str
    name: str
    url: str


class ApiKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A static API key bound to one tenant and a set of scopes."""

    key: str
    tenant_id: str
    scopes: tuple[str, ...]


class TrustedIssuer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A JWT issuer whose tokens the sandbox accepts.

    Keys come from ``jwks_uri`` (fetched and cached) or, for tests, from an inline ``jwks``.
    """

    issuer: str
    audience: str = DEFAULT_JWT_AUDIENCE
    algorithms: tuple[str, ...] = DEFAULT_JWT_ALGORITHMS
    jwks_uri: str | None = None
    jwks: dict[str, Any] | None = None


class SandboxSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """All settings of one sandbox instance: where it listens, its database and its seed data.

    DPoP (RFC 9449), for tokens bound to a key (``cnf.jkt``): proofs may be signed with one of
    ``dpop_algorithms`` (default ES256, RS256, PS256, EdDSA); a proof's ``iat`` may be up to
    ``dpop_proof_max_age_seconds`` old (60) and ``dpop_clock_skew_seconds`` ahead (5); the
    ``jti`` of up to ``dpop_replay_cache_size`` (100 000) proofs still in that window are
    remembered. With ``dpop_nonce_required`` (off) a proof must carry a nonce the sandbox gave in
    ``DPoP-Nonce``; it changes every ``dpop_nonce_rotation_seconds`` (300) and the one before it
    is still accepted.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db: str = DEFAULT_DB
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    idempotency_ttl_seconds: int = DEFAULT_IDEMPOTENCY_TTL_SECONDS
    jwks_min_refetch_seconds: float = DEFAULT_JWKS_MIN_REFETCH_SECONDS
    jwks_max_age_seconds: float = DEFAULT_JWKS_MAX_AGE_SECONDS
    dpop_algorithms: tuple[str, ...] = DEFAULT_DPOP_ALGORITHMS
    dpop_proof_max_age_seconds: float = DEFAULT_DPOP_PROOF_MAX_AGE_SECONDS
    dpop_clock_skew_seconds: float = DEFAULT_DPOP_CLOCK_SKEW_SECONDS
    dpop_replay_cache_size: int = DEFAULT_DPOP_REPLAY_CACHE_SIZE
    dpop_nonce_required: bool = False
    dpop_nonce_rotation_seconds: float = DEFAULT_DPOP_NONCE_ROTATION_SECONDS
    tenants: tuple[Tenant, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    ingesters: tuple[Ingester, ...] = ()
    destinations: tuple[Destination, ...] = ()
    api_keys: tuple[ApiKey, ...] = ()
    trusted_issuers: tuple[TrustedIssuer, ...] = ()


def load_settings(path: str | Path, *, db: str | None = None) -> SandboxSettings:
    """Read and validate the ``[sandbox]`` tables of the TOML file at ``path``.

    ``db`` overrides the configured database path (``":memory:"`` gives a private, empty
    database, which is what tests want).

    Raises:
        ConfigError: the file cannot be read, or a key is missing or invalid.
    """
    try:
        with Path(path).open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    raw = document.get("sandbox")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: missing [sandbox] table")
    settings = settings_from_mapping(raw)
    if db is not None:
        settings = msgspec.structs.replace(settings, db=db)
    return settings


def settings_from_mapping(raw: dict[str, Any]) -> SandboxSettings:
    """Build and validate settings from the contents of a ``[sandbox]`` table."""
    try:
        settings = msgspec.convert(raw, SandboxSettings)
    except msgspec.ValidationError as exc:
        raise ConfigError(_name_key(str(exc))) from exc
    _check(settings)
    return settings


def with_issuers(settings: SandboxSettings, issuers: dict[str, str]) -> SandboxSettings:
    """Replace the trusted issuers by ``{issuer: jwks_uri}``.

    Audience and algorithms are kept from the first configured issuer, so a launcher can move
    the token issuers to other ports without restating the rest.
    """
    template = settings.trusted_issuers[0] if settings.trusted_issuers else TrustedIssuer("")
    replaced = tuple(
        TrustedIssuer(
            issuer=issuer,
            jwks_uri=jwks_uri,
            audience=template.audience,
            algorithms=template.algorithms,
        )
        for issuer, jwks_uri in issuers.items()
    )
    updated = msgspec.structs.replace(settings, trusted_issuers=replaced)
    _check(updated)
    return updated


def with_changes(settings: SandboxSettings, **changes: Any) -> SandboxSettings:
    """A copy of ``settings`` with ``changes`` applied, validated like a loaded file."""
    updated = msgspec.structs.replace(settings, **changes)
    _check(updated)
    return updated


def _name_key(message: str) -> str:
    # msgspec reports paths as "... - at `$.clusters[0].id`"; users know them as sandbox.….
    text, sep, where = message.partition(" - at `$")
    if sep:
        return f"sandbox{where.rstrip('`')}: {text}"
    return f"sandbox: {text}"


def _unique(items: tuple[Any, ...], attr: str, table: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        value = getattr(item, attr)
        if not value:
            raise ConfigError(f"sandbox.{table}[{index}].{attr}: must not be empty")
        if value in seen:
            raise ConfigError(f"sandbox.{table}[{index}].{attr}: duplicate value {value!r}")
        seen.add(value)


def _check(settings: SandboxSettings) -> None:
    if not 0 <= settings.port <= 65535:
        raise ConfigError("sandbox.port: must be between 0 and 65535")
    if not settings.db:
        raise ConfigError("sandbox.db: must not be empty")
    if settings.max_body_bytes < 1:
        raise ConfigError("sandbox.max_body_bytes: must be positive")
    if settings.idempotency_ttl_seconds < 1:
        raise ConfigError("sandbox.idempotency_ttl_seconds: must be positive")
    _check_dpop(settings)
    _unique(settings.tenants, "id", "tenants")
    _unique(settings.clusters, "id", "clusters")
    _unique(settings.ingesters, "id", "ingesters")
    _unique(settings.destinations, "id", "destinations")
    _unique(settings.api_keys, "key", "api_keys")
    _unique(settings.trusted_issuers, "issuer", "trusted_issuers")
    tenants = {tenant.id for tenant in settings.tenants}
    clusters = {cluster.id: cluster.tenant_id for cluster in settings.clusters}
    for index, cluster in enumerate(settings.clusters):
        if cluster.tenant_id not in tenants:
            raise ConfigError(f"sandbox.clusters[{index}].tenant_id: unknown tenant")
    placed: tuple[tuple[str, tuple[Ingester | Destination, ...]], ...] = (
        ("ingesters", settings.ingesters),
        ("destinations", settings.destinations),
    )
    for table, items in placed:
        for index, item in enumerate(items):
            if item.tenant_id not in tenants:
                raise ConfigError(f"sandbox.{table}[{index}].tenant_id: unknown tenant")
            if clusters.get(item.cluster_id) != item.tenant_id:
                raise ConfigError(
                    f"sandbox.{table}[{index}].cluster_id: not a cluster of {item.tenant_id}"
                )
    for index, api_key in enumerate(settings.api_keys):
        if not api_key.key.startswith("zen_key_"):
            raise ConfigError(f"sandbox.api_keys[{index}].key: must start with 'zen_key_'")
        if api_key.tenant_id not in tenants:
            raise ConfigError(f"sandbox.api_keys[{index}].tenant_id: unknown tenant")
        for scope in api_key.scopes:
            if scope not in KNOWN_SCOPES:
                raise ConfigError(f"sandbox.api_keys[{index}].scopes: unknown scope {scope!r}")
    for index, issuer in enumerate(settings.trusted_issuers):
        where = f"sandbox.trusted_issuers[{index}]"
        if (issuer.jwks_uri is None) == (issuer.jwks is None):
            raise ConfigError(f"{where}: set exactly one of jwks_uri and jwks")
        if not issuer.audience:
            raise ConfigError(f"{where}.audience: must not be empty")
        if not issuer.algorithms:
            raise ConfigError(f"{where}.algorithms: must not be empty")
        for algorithm in issuer.algorithms:
            if algorithm not in SUPPORTED_JWT_ALGORITHMS:
                raise ConfigError(
                    f"{where}.algorithms: {algorithm!r} is not an asymmetric signature algorithm"
                )


def _check_dpop(settings: SandboxSettings) -> None:
    if not settings.dpop_algorithms:
        raise ConfigError("sandbox.dpop_algorithms: must not be empty")
    for algorithm in settings.dpop_algorithms:
        if algorithm not in SUPPORTED_JWT_ALGORITHMS:
            raise ConfigError(
                f"sandbox.dpop_algorithms: {algorithm!r} is not an asymmetric signature algorithm"
            )
    if settings.dpop_proof_max_age_seconds <= 0:
        raise ConfigError("sandbox.dpop_proof_max_age_seconds: must be positive")
    if settings.dpop_clock_skew_seconds < 0:
        raise ConfigError("sandbox.dpop_clock_skew_seconds: must not be negative")
    if settings.dpop_replay_cache_size < 1:
        raise ConfigError("sandbox.dpop_replay_cache_size: must be positive")
    if settings.dpop_nonce_rotation_seconds <= 0:
        raise ConfigError("sandbox.dpop_nonce_rotation_seconds: must be positive")
