"""Who is calling, what they may do per tenant, and the checks made before any upstream call.

A :class:`Principal` is produced by an authenticator (a session cookie, a bearer JWT, or a test's
static principal) and carries everything the BFF needs afterwards: the subject, the scopes per
tenant, and the access token to relay upstream when the credential mode is ``relay``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from enum import Enum
from typing import Any, Literal

import msgspec
from starlette.requests import Request

from ..problems import ProblemError
from .dpop import DPoPKey

READ_SCOPES = frozenset({"read:delivery-flows", "read:*", "admin:delivery-flows"})
WRITE_SCOPES = frozenset({"write:delivery-flows", "admin:delivery-flows"})


class Action(Enum):
    READ = "read:delivery-flows"
    WRITE = "write:delivery-flows"

    @property
    def granting_scopes(self) -> frozenset[str]:
        return READ_SCOPES if self is Action.READ else WRITE_SCOPES


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    subject: str
    tenants: Mapping[str, frozenset[str]]
    via: Literal["session", "bearer", "static"]
    name: str | None = None
    email: str | None = None
    access_token: str | None = msgspec.field(default=None)
    dpop_key: DPoPKey | None = None
    """The key the access token is bound to (RFC 9449); None for a bearer token."""

    def __repr__(self) -> str:  # the access token must never reach a log line
        return f"Principal(subject={self.subject!r}, via={self.via!r})"

    def scopes(self, tenant_id: str) -> frozenset[str]:
        return self.tenants.get(tenant_id, frozenset())


def tenants_from_claim(claim: object) -> dict[str, frozenset[str]]:
    """``{"ten_acme": ["read:delivery-flows", …]}`` → tenant → scopes; malformed parts dropped."""
    if not isinstance(claim, Mapping):
        return {}
    return {
        tenant: frozenset(s for s in scopes if isinstance(s, str))
        for tenant, scopes in claim.items()
        if isinstance(tenant, str) and isinstance(scopes, list | tuple)
    }


def tenants_from_scope(tenant_ids: Iterable[object], scope: object) -> dict[str, frozenset[str]]:
    """Fallback claims: a tenant list plus a space-separated ``scope`` applying to each tenant."""
    scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
    return {tenant: scopes for tenant in tenant_ids if isinstance(tenant, str)}


def tenants_from_claims(claims: dict[str, Any], claim_name: str) -> dict[str, frozenset[str]]:
    """Tenant → scopes from the tenants claim, or else a tenant list and the ``scope`` claim."""
    if claim_name in claims:
        return tenants_from_claim(claims[claim_name])
    tenant_ids = claims.get("tenants") or (
        [claims["tenant_id"]] if isinstance(claims.get("tenant_id"), str) else []
    )
    if not isinstance(tenant_ids, list):
        tenant_ids = []
    return tenants_from_scope(tenant_ids, claims.get("scope"))


class Permissions(msgspec.Struct, frozen=True):
    """What a principal may do in one tenant."""

    read: bool
    write: bool


def permissions(principal: Principal, tenant_id: str) -> Permissions:
    scopes = principal.scopes(tenant_id)
    return Permissions(read=bool(scopes & READ_SCOPES), write=bool(scopes & WRITE_SCOPES))


def authorize(principal: Principal, tenant_id: str, action: Action) -> None:
    """Raise the 403 problem that applies, or return when the principal may act."""
    if tenant_id not in principal.tenants:
        raise ProblemError(403, "tenant-forbidden", "You have no access to this tenant.")
    if not principal.scopes(tenant_id) & action.granting_scopes:
        raise ProblemError(
            403,
            "insufficient-scope",
            f"This action needs the {action.value} scope.",
            required_scope=action.value,
        )


Authenticator = Callable[[Request], Awaitable[Principal | None]]
"""Returns the caller, ``None`` when its kind of credential is absent, or raises a ProblemError."""


def static_authenticator(principal: Principal) -> Authenticator:
    """Every request is ``principal``: for tests and for tools that front the BFF themselves."""

    async def authenticate(request: Request) -> Principal | None:
        return principal

    return authenticate
