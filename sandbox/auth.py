"""Who is calling: API keys from the configuration and JWTs from trusted issuers.

A credential resolves to a :class:`Principal`, a map from tenant id to the scopes granted in it.
JWT keys come from each issuer's JWKS, fetched with httpx and cached; an unknown ``kid`` triggers
at most one refetch per ``jwks_min_refetch_seconds``. The algorithm list is fixed per issuer, so
``alg: none`` and HMAC algorithms (which would accept a public key as a secret) never verify.

A JWT bound to a key (``cnf.jkt``) is taken only as ``Authorization: DPoP <token>`` with a proof
that :class:`~sandbox.dpop.ProofChecker` accepts; sent as ``Bearer`` it is refused (RFC 9449 7.2).
Unbound JWTs and API keys are ``Bearer`` credentials.
"""

from __future__ import annotations

import asyncio
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import msgspec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact
from starlette.datastructures import Headers

from sandbox.config import SandboxSettings, TrustedIssuer
from sandbox.dpop import ProofChecker
from sandbox.problems import Problem, authentication_required, dpop_refused

READ_SCOPES = frozenset({"read:delivery-flows", "read:*", "admin:delivery-flows"})
WRITE_SCOPES = frozenset({"write:delivery-flows", "admin:delivery-flows"})
API_KEY_PREFIX = "zen_key_"
JWKS_FETCH_TIMEOUT_SECONDS = 5.0


class Principal(msgspec.Struct, frozen=True):
    """An authenticated caller: ``kind`` is ``"api_key"`` or ``"jwt"``.

    ``dpop_nonce`` is the nonce to hand back in ``DPoP-Nonce`` when the caller's proof carried
    the previous one.
    """

    kind: str
    subject: str
    tenants: Mapping[str, frozenset[str]]
    dpop_nonce: str | None = None


class Authenticator:
    """Resolves request credentials to principals.

    ``clock`` returns the current Unix time; ``transport`` lets tests serve JWKS documents
    without a network.
    """

    def __init__(
        self,
        settings: SandboxSettings,
        *,
        clock: Callable[[], float],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api_keys = {
            api_key.key: Principal(
                kind="api_key",
                subject=api_key.key[: len(API_KEY_PREFIX) + 8],
                tenants={api_key.tenant_id: frozenset(api_key.scopes)},
            )
            for api_key in settings.api_keys
        }
        self._issuers = {issuer.issuer: issuer for issuer in settings.trusted_issuers}
        self._jwks = {
            issuer.issuer: _JwksCache(
                issuer,
                clock=clock,
                transport=transport,
                min_refetch=settings.jwks_min_refetch_seconds,
                max_age=settings.jwks_max_age_seconds,
            )
            for issuer in settings.trusted_issuers
        }
        self._clock = clock
        self._proofs = ProofChecker(settings, clock=clock)

    async def authenticate(self, headers: Headers, *, method: str, uri: str) -> Principal:
        """The principal behind a request; raises a 401 :class:`Problem`.

        ``method`` and ``uri`` (scheme, host and path as the client addressed them, see
        :func:`sandbox.dpop.request_uri`) are what a DPoP proof must name.
        """
        authorization = headers.get("authorization")
        api_key_header = headers.get("x-api-key")
        scheme = token = None
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            scheme = scheme.lower()
            if scheme not in {"bearer", "dpop"} or not value.strip():
                raise self._unauthenticated(
                    "The Authorization header must use the Bearer or DPoP scheme.",
                    invalid_token=True,
                )
            token = value.strip()
        if token is not None and api_key_header is not None and token != api_key_header:
            raise self._unauthenticated(
                "Send one credential: Authorization and X-API-Key disagree.", invalid_token=True
            )
        if scheme == "dpop":
            assert token is not None
            return await self._dpop_principal(token, headers, method=method, uri=uri)
        credential = token if token is not None else api_key_header
        if credential is None:
            raise self._unauthenticated("Send an API key or a bearer token from a trusted issuer.")
        if credential.startswith(API_KEY_PREFIX) or token is None:
            principal = self._api_keys.get(credential)
            if principal is None:
                raise self._unauthenticated("The API key is not valid.", invalid_token=True)
            return principal
        claims = await self._verified_claims(credential)
        principal = _principal(claims) if claims is not None else None
        if claims is None or principal is None:
            raise self._unauthenticated("The bearer token is not valid.", invalid_token=True)
        if _bound_key(claims) is not None:
            raise self._dpop_invalid_token(
                "The token is bound to a DPoP key: send it with the DPoP scheme and a proof."
            )
        if "cnf" in claims:
            # RFC 8705 3: bound to a client certificate, which only a TLS handshake can prove;
            # the sandbox terminates no mutual TLS, so such a token is never a bearer token here.
            raise self._unauthenticated(
                "The token is bound to a client certificate (cnf): this server takes no mutual "
                "TLS, so it cannot be accepted.",
                invalid_token=True,
            )
        return principal

    async def _dpop_principal(
        self, token: str, headers: Headers, *, method: str, uri: str
    ) -> Principal:
        if token.startswith(API_KEY_PREFIX):
            raise self._dpop_invalid_token(
                "API keys are not bound to a key: send them with the Bearer scheme."
            )
        claims = await self._verified_claims(token)
        principal = _principal(claims) if claims is not None else None
        if claims is None or principal is None:
            raise self._dpop_invalid_token("The access token is not valid.")
        jkt = _bound_key(claims)
        if jkt is None:
            raise self._dpop_invalid_token(
                "The access token is not bound to a DPoP key: send it with the Bearer scheme."
            )
        nonce = self._proofs.check(
            headers.getlist("dpop"), method=method, uri=uri, access_token=token, jkt=jkt
        )
        return msgspec.structs.replace(principal, dpop_nonce=nonce)

    def _unauthenticated(self, detail: str, *, invalid_token: bool = False) -> Problem:
        return authentication_required(
            detail, invalid_token=invalid_token, dpop_algs=self._proofs.algorithms
        )

    def _dpop_invalid_token(self, detail: str) -> Problem:
        return dpop_refused(detail, error="invalid_token", dpop_algs=self._proofs.algorithms)

    async def _verified_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of ``token`` if a trusted issuer signed it and it is current."""
        try:
            compact = extract_compact(token.encode("ascii"))
            header = compact.headers()
            unverified = json.loads(compact.payload)
        # RecursionError: a payload nested deeper than the JSON decoder allows.
        except (JoseError, ValueError, UnicodeError, binascii.Error, RecursionError):
            return None
        if not isinstance(unverified, dict) or not isinstance(unverified.get("iss"), str):
            return None
        issuer = self._issuers.get(unverified["iss"])
        if issuer is None or header.get("alg") not in issuer.algorithms:
            return None
        kid = header.get("kid")
        keys = await self._jwks[issuer.issuer].keys(kid if isinstance(kid, str) else None)
        if keys is None:
            return None
        try:
            verified = jwt.decode(token, keys, algorithms=list(issuer.algorithms))
            registry = jwt.JWTClaimsRegistry(
                now=lambda: int(self._clock()),
                leeway=30,
                iss={"essential": True, "value": issuer.issuer},
                aud={"essential": True, "value": issuer.audience},
                exp={"essential": True},
            )
            registry.validate(verified.claims)
        except (JoseError, ValueError, TypeError):
            return None
        return verified.claims


def require_tenant_scope(
    principal: Principal, tenant_id: str, *, accepted: frozenset[str], required: str
) -> None:
    """Raise 403 unless ``principal`` may act in ``tenant_id`` with one of ``accepted``."""
    granted = principal.tenants.get(tenant_id)
    if granted is None:
        raise Problem(
            403, "tenant-forbidden", f"The credential does not grant access to tenant {tenant_id}."
        )
    if not granted & accepted:
        who = "API key" if principal.kind == "api_key" else "token"
        raise Problem(
            403,
            "insufficient-scope",
            f"The {who} does not have the {required} scope.",
            extra={"required_scope": required},
        )


def _principal(claims: Mapping[str, Any]) -> Principal | None:
    tenants = _tenant_scopes(claims)
    if tenants is None:
        return None
    subject = claims.get("sub")
    return Principal(
        kind="jwt", subject=subject if isinstance(subject, str) else "", tenants=tenants
    )


def _bound_key(claims: Mapping[str, Any]) -> str | None:
    """The ``cnf.jkt`` thumbprint a token is bound to (RFC 9449 6.1); ``""`` if malformed."""
    confirmation = claims.get("cnf")
    if not isinstance(confirmation, dict) or "jkt" not in confirmation:
        return None
    jkt = confirmation["jkt"]
    return jkt if isinstance(jkt, str) else ""


def _tenant_scopes(claims: Mapping[str, Any]) -> dict[str, frozenset[str]] | None:
    zen_tenants = claims.get("zen_tenants")
    if zen_tenants is not None:
        if not isinstance(zen_tenants, dict):
            return None
        tenants: dict[str, frozenset[str]] = {}
        for tenant_id, scopes in zen_tenants.items():
            if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                return None
            tenants[tenant_id] = frozenset(scopes)
        return tenants
    tenant_id = claims.get("tenant_id")
    scope = claims.get("scope", "")
    if isinstance(tenant_id, str) and tenant_id and isinstance(scope, str):
        return {tenant_id: frozenset(scope.split())}
    return None


class _JwksCache:
    """The key set of one issuer, refreshed when old or when a token names an unknown key."""

    def __init__(
        self,
        issuer: TrustedIssuer,
        *,
        clock: Callable[[], float],
        transport: httpx.AsyncBaseTransport | None,
        min_refetch: float,
        max_age: float,
    ) -> None:
        self._issuer = issuer
        self._clock = clock
        self._transport = transport
        self._min_refetch = min_refetch
        self._max_age = max_age
        self._keys: KeySet | None = None
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        if issuer.jwks is not None:
            self._keys = KeySet.import_key_set(issuer.jwks)  # type: ignore[arg-type]

    async def keys(self, kid: str | None) -> KeySet | None:
        """Keys that may verify a token naming ``kid``, or ``None`` if there are none."""
        if self._issuer.jwks_uri is None:
            return self._keys if self._has(kid) else None
        async with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self._max_age
            may_refetch = self._fetched_at is None or now - self._fetched_at >= self._min_refetch
            if stale or (not self._has(kid) and may_refetch):
                await self._fetch(now)
            return self._keys if self._has(kid) else None

    def _has(self, kid: str | None) -> bool:
        if self._keys is None:
            return False
        if kid is None:
            return True
        return any(key.kid == kid for key in self._keys.keys)

    async def _fetch(self, now: float) -> None:
        self._fetched_at = now
        assert self._issuer.jwks_uri is not None
        try:
            async with httpx.AsyncClient(
                transport=self._transport, timeout=JWKS_FETCH_TIMEOUT_SECONDS
            ) as client:
                response = await client.get(self._issuer.jwks_uri)
                response.raise_for_status()
                self._keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, JoseError, ValueError, TypeError, KeyError):
            # Keep the previous keys: an unreachable issuer must not log everyone out at once.
            return
