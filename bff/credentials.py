"""The credential the gateway presents upstream on a caller's behalf: one room.

``relay`` forwards the caller's own access token; ``internal-jwt`` has the gateway mint a
short-lived, audience-bound JWT naming the subject, one tenant (``tenant_id``) and the scopes
the user holds there (``scope``, space-separated), signed with ES256
(:class:`UpstreamTokenMinter`). The backend trusts the gateway as an issuer through the public
keys served at ``/api/bff/v1/.well-known/jwks.json`` (:data:`routes`). Either way, a 401 from the
backend is a configuration error (:class:`UpstreamCredentials`).

Errors: :func:`load_signing_key` raises :class:`SigningKeyError` (a ``ValueError``) for a
missing, unreadable or unsuitable key file; minting itself raises nothing of its own.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import cachetools
import msgspec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from upstream_client import Credential, DPoPToken

from .auth import Principal
from .paths import JWKS_PATH
from .problems import session_expired
from .settings import Settings

logger = logging.getLogger("bff.upstream")

REJECTIONS_WINDOW = 300.0
"""How long readiness keeps reporting that the backend refused the gateway's credential."""


class UpstreamCredentials:
    """Which token goes upstream, and what it means when the backend refuses it.

    The gateway forwards only tokens it has checked (a bearer token), renewed before expiry (a
    session's) or minted itself, so a 401 from the backend is never the user's to fix: the two
    disagree on issuer, keys or audience. :meth:`refused` logs that as the configuration error it
    is, with what to check; :meth:`refusals` reports it to readiness for
    :data:`REJECTIONS_WINDOW` seconds.
    """

    def __init__(
        self,
        mode: Literal["relay", "internal-jwt"],
        minter: UpstreamTokenMinter | None = None,
        *,
        explain: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode == "internal-jwt" and minter is None:
            raise ValueError("internal-jwt credentials need a token minter")
        self._mode = mode
        self._minter = minter
        self._explain = explain
        self._clock = clock
        self._refused: list[float] = []

    @classmethod
    def for_settings(
        cls, settings: Settings, minter: UpstreamTokenMinter | None
    ) -> UpstreamCredentials:
        """The configured mode, explaining a refusal in the settings' own terms."""
        if settings.upstream.credential == "relay":
            explain = (
                f"the backend must trust access tokens of {settings.oidc.issuer} (its keys and "
                "the audience the provider puts in them: see [oidc].extra_authorization_params "
                '"resource" or "audience"), or set [upstream].credential = "internal-jwt"'
            )
        else:
            issuer = settings.internal_jwt.issuer or settings.bff.public_origin.rstrip("/")
            explain = (
                f"the backend must trust issuer {issuer} with keys from "
                f"{settings.bff.public_origin.rstrip('/')}{JWKS_PATH} and audience "
                f"{settings.internal_jwt.audience!r} ([internal_jwt])"
            )
        return cls(settings.upstream.credential, minter, explain=explain)

    @property
    def relays_caller_token(self) -> bool:
        return self._mode == "relay" or self._minter is None

    def token_for(self, principal: Principal, tenant_id: str) -> Credential:
        """What goes upstream for ``principal`` in ``tenant_id``: in ``relay`` mode its access
        token (with proofs of its key when it is DPoP-bound), else a minted token."""
        minter = None if self._mode == "relay" else self._minter
        if minter is None:
            if not principal.access_token:
                raise session_expired("Your session has no access token; sign in again.")
            if principal.dpop_key is not None:
                return DPoPToken(principal.access_token, principal.dpop_key)
            return principal.access_token
        return minter.mint(principal.subject, tenant_id, sorted(principal.scopes(tenant_id)))

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public keys of the tokens minted here."""
        return self._minter.jwks() if self._minter is not None else {"keys": []}

    def refused(self, request_id: str | None) -> None:
        """The backend answered 401 to the credential of this request: log what to check."""
        now = self._clock()
        self._refused = [t for t in self._refused if now - t < REJECTIONS_WINDOW] + [now]
        what = "a relayed access token" if self.relays_caller_token else "a minted token"
        logger.error(
            "configuration error: the backend refused %s (401, request %s); %s",
            what,
            request_id,
            self._explain,
        )

    def refusals(self) -> str | None:
        """For readiness: how often the backend refused our credential lately, or None."""
        now = self._clock()
        recent = [t for t in self._refused if now - t < REJECTIONS_WINDOW]
        if not recent:
            return None
        what = "relayed access tokens" if self.relays_caller_token else "minted tokens"
        return (
            f"the backend refused {what} {len(recent)} time(s) in the last "
            f"{REJECTIONS_WINDOW / 60:g} min, last {now - recent[-1]:.0f} s ago: "
            "a configuration error (see the log)"
        )


# --- the minted token ---------------------------------------------------------------------------

SIGNING_ALGORITHM = "ES256"
# Renew a cached token this long before it expires, so it never expires in flight; at most this
# share of the lifetime, so short lifetimes still benefit from the cache.
_RENEW_BEFORE = 60.0
_RENEW_BEFORE_SHARE = 0.2


class SigningKeyError(ValueError):
    """The configured signing key cannot be used (missing, unreadable, public, wrong curve)."""


def load_signing_key(path: str | Path) -> ECKey:
    """Load the ES256 signing key: a P-256 private key in PEM. Its kid is its RFC 7638 thumbprint.

    :raises SigningKeyError: naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key {path}: {exc.strerror}") from exc
    try:
        key = ECKey.import_key(data)
    except (JoseError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"signing key {path} is not a PEM EC key") from exc
    if not key.is_private:
        raise SigningKeyError(f"signing key {path} is a public key; a private key is needed")
    if key.curve_name != "P-256":
        raise SigningKeyError(f"signing key {path} uses {key.curve_name}; ES256 needs P-256")
    return key


class UpstreamTokenMinter:
    """Signs the short-lived upstream JWTs and publishes the public key that verifies them.

    Tokens are `ttl` seconds long and cached per (sub, tenant, scopes) until shortly before they
    expire (60 s, or 20 % of `ttl` when that is shorter), so a burst of calls costs one signature.
    Without `key` an ephemeral key is generated: fine for development, but tokens then stop
    verifying after a restart and differ between instances.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        ttl: float = 300.0,
        key: ECKey | None = None,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        if ttl < 1:
            raise ValueError("upstream token ttl must be at least one second")
        if key is None:
            key = ECKey.generate_key("P-256")
        elif not key.is_private or key.curve_name != "P-256":
            raise SigningKeyError("the upstream signing key must be a private P-256 key")
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self._key = key
        self.kid = key.thumbprint()
        self._clock = clock
        self._renew_before = min(_RENEW_BEFORE, ttl * _RENEW_BEFORE_SHARE)
        self._cache: cachetools.LRUCache[tuple[str, str, tuple[str, ...]], tuple[str, float]] = (
            cachetools.LRUCache(maxsize=cache_size)
        )

    def mint(self, sub: str, tenant_id: str, scopes: Iterable[str]) -> str:
        """Return a valid upstream JWT for this user, tenant and scopes (cached when fresh)."""
        scope_list = tuple(sorted(set(scopes)))
        cache_key = (sub, tenant_id, scope_list)
        now = self._clock()
        cached = self._cache.get(cache_key)
        if cached is not None and now < cached[1] - self._renew_before:
            return cached[0]

        issued_at = int(now)
        expires_at = issued_at + int(self.ttl)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "tenant_id": tenant_id,
            "scope": " ".join(scope_list),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires_at,
            "jti": secrets.token_urlsafe(16),
        }
        header = {"alg": SIGNING_ALGORITHM, "kid": self.kid, "typ": "JWT"}
        token = jwt.encode(header, claims, self._key, algorithms=[SIGNING_ALGORITHM])
        self._cache[cache_key] = (token, float(expires_at))
        return token

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public JWK set that verifies minted tokens (no private member)."""
        public = dict(self._key.as_dict(private=False))
        public.update({"kid": self.kid, "use": "sig", "alg": SIGNING_ALGORITHM})
        return {"keys": [public]}


def minter_for(settings: Settings, clock: Callable[[], float]) -> UpstreamTokenMinter | None:
    """The minter ``[internal_jwt]`` describes, in ``internal-jwt`` mode; None in ``relay``."""
    if settings.upstream.credential != "internal-jwt":
        return None
    config = settings.internal_jwt
    return UpstreamTokenMinter(
        issuer=config.issuer or settings.bff.public_origin.rstrip("/"),
        audience=config.audience,
        ttl=config.ttl_seconds,
        key=load_signing_key(config.signing_key_file) if config.signing_key_file else None,
        clock=clock,
    )


async def jwks(request: Request) -> Response:
    """The public keys of the minted tokens (none in ``relay`` mode)."""
    credentials: UpstreamCredentials = request.app.state.services.credentials
    return Response(
        msgspec.json.encode(credentials.jwks()),
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


routes = [Route("/.well-known/jwks.json", jwks, methods=["GET"])]
