"""The BFF-minted upstream credential (credential mode `internal-jwt`).

Instead of relaying the user's access token, the BFF signs a short-lived JWT bound to the upstream
audience, carrying the user (`sub`), one tenant (`tenant_id`) and the scopes the user holds there
(`scope`, space-separated). The upstream trusts the BFF as an issuer through the public keys
served at `/api/bff/v1/.well-known/jwks.json` (`UpstreamTokenMinter.jwks()`).

Errors: `load_signing_key` raises `SigningKeyError` (a `ValueError`) for a missing, unreadable or
unsuitable key file; minting itself raises nothing of its own.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cachetools
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

__all__ = ["SIGNING_ALGORITHM", "SigningKeyError", "UpstreamTokenMinter", "load_signing_key"]

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
