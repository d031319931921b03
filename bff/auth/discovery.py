"""What the OpenID provider says of itself: its metadata (discovery) and its signing keys.

The metadata is loaded on first use and refreshed every hour in the background while the copy
serves on (:class:`bff.cache.StaleWhileRefresh`); until it has loaded, a failed attempt is not
repeated for :data:`RETRY_AFTER_FAILURE` seconds, so callers fail fast meanwhile. From it come
the key set (:class:`JWKSCache`), the algorithms ID tokens may be signed with, and one JWT
validator per audience.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import msgspec

from ..cache import StaleWhileRefresh
from .jwt_validation import SUPPORTED_ALGORITHMS, JWKSCache, JWTValidator

METADATA_MAX_AGE = 3600.0
RETRY_AFTER_FAILURE = 5.0
"""Seconds during which a failed load of the provider's metadata is not tried again."""


class ProviderUnavailable(Exception):
    """The identity provider cannot be reached or answered outside the protocol."""


class ProviderMetadata(msgspec.Struct, frozen=True):
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    revocation_endpoint: str | None = None
    code_challenge_methods_supported: list[str] | None = None
    authorization_response_iss_parameter_supported: bool = False
    id_token_signing_alg_values_supported: list[str] | None = None
    token_endpoint_auth_methods_supported: list[str] | None = None
    token_endpoint_auth_signing_alg_values_supported: list[str] | None = None
    mtls_endpoint_aliases: dict[str, str] | None = None
    pushed_authorization_request_endpoint: str | None = None
    require_pushed_authorization_requests: bool = False
    dpop_signing_alg_values_supported: list[str] | None = None


class Discovery:
    """The provider at ``issuer`` (as configured: its trailing slash does not matter)."""

    def __init__(
        self, issuer: str, *, http: httpx.AsyncClient, clock: Callable[[], float] = time.time
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self._http = http
        self._clock = clock
        self._metadata = StaleWhileRefresh(
            self._load_metadata,
            name="provider metadata",
            errors=ProviderUnavailable,
            max_age=METADATA_MAX_AGE,
            retry_after=RETRY_AFTER_FAILURE,
            clock=clock,
        )
        self._jwks: JWKSCache | None = None
        self._validators: dict[tuple[str, tuple[str, ...]], tuple[JWKSCache, JWTValidator]] = {}

    async def metadata(self) -> ProviderMetadata:
        """The provider's discovery document; :class:`ProviderUnavailable` while it cannot load."""
        return await self._metadata.get()

    async def early_metadata(self) -> ProviderMetadata | None:
        """The metadata if the provider answers now (at start); None, and nothing remembered of
        the failure, if it does not."""
        return await self._metadata.attempt()

    async def _load_metadata(self) -> ProviderMetadata:
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            response = await self._http.get(url)
            response.raise_for_status()
            metadata = msgspec.json.decode(response.content, type=ProviderMetadata)
        except (httpx.HTTPError, msgspec.DecodeError) as exc:
            raise ProviderUnavailable(f"cannot load {url}: {exc}") from exc
        if metadata.issuer.rstrip("/") != self.issuer:
            raise ProviderUnavailable(
                f"provider metadata names issuer {metadata.issuer!r}, expected {self.issuer!r}"
            )
        return metadata

    async def jwks(self) -> JWKSCache:
        metadata = await self.metadata()
        if self._jwks is None or self._jwks.jwks_uri != metadata.jwks_uri:
            self._jwks = JWKSCache(metadata.jwks_uri, http=self._http)
        return self._jwks

    async def id_token_algorithms(self) -> tuple[str, ...]:
        """What ID (and logout) tokens may be signed with: what the provider says it uses, within
        :data:`SUPPORTED_ALGORITHMS` (asymmetric only: never ``none``, never HMAC); RS256 when it
        says nothing, as OpenID Connect Discovery defines."""
        advertised = (await self.metadata()).id_token_signing_alg_values_supported
        if advertised is None:
            return ("RS256",)
        safe = tuple(sorted(set(advertised) & SUPPORTED_ALGORITHMS))
        if not safe:
            raise ProviderUnavailable(
                f"the provider signs ID tokens only with {sorted(advertised)}, none of which is "
                f"accepted ({', '.join(sorted(SUPPORTED_ALGORITHMS))})"
            )
        return safe

    async def token_validator(
        self, audience: str, algorithms: tuple[str, ...] | None = None
    ) -> JWTValidator:
        """One validator per audience and algorithms (default: every supported one, as for
        access tokens, which no metadata describes), rebuilt when the key set URL changes."""
        algorithms = algorithms or tuple(sorted(SUPPORTED_ALGORITHMS))
        jwks = await self.jwks()
        cached = self._validators.get((audience, algorithms))
        if cached is None or cached[0] is not jwks:
            validator = JWTValidator(
                # Tokens name the issuer exactly as the provider's metadata does, trailing slash
                # and all (https://tenant.auth0.com/); the configured value may lack it.
                issuer=(await self.metadata()).issuer,
                audience=audience,
                jwks=jwks,
                clock=self._clock,
                algorithms=algorithms,
            )
            cached = self._validators[(audience, algorithms)] = (jwks, validator)
        return cached[1]
