"""The BFF as an OpenID Connect relying party (a confidential client).

Discovery, the authorization-code request with PKCE (S256), ``state`` and ``nonce``, the code
exchange, ID token validation, refresh, revocation and the end-session URL. The protocol messages
are authlib's (``prepare_grant_uri``, ``prepare_token_request``, the S256 challenge); they travel
over the BFF's own httpx client, which holds no per-user state: tokens live only in the session
store, never on an object shared between users' calls.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import msgspec
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from .jwt_validation import (
    SUPPORTED_ALGORITHMS,
    InvalidToken,
    JWKSCache,
    JWKSUnavailable,
    JWTValidator,
)
from .settings import OidcSection
from .state.logins import LoginRequest

logger = logging.getLogger("bff.oidc")

METADATA_MAX_AGE = 3600.0
RETRY_AFTER_FAILURE = 5.0
"""Seconds during which a failed first load of the provider's metadata is not tried again."""


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


class TokenSet(msgspec.Struct, frozen=True):
    access_token: str | None
    refresh_token: str | None
    id_token: str | None
    expires_at: float | None
    lifetime: float | None = None
    """Seconds the access token was good for when issued (what the refresh margin scales to)."""


class LoginError(Exception):
    """The login cannot complete (bad code, bad ID token, provider error)."""


class UserinfoRefused(LoginError):
    """The provider refused our fresh access token at its userinfo endpoint (a 4xx)."""


class ProviderUnavailable(Exception):
    """The identity provider cannot be reached or answered outside the protocol."""


class TokenError(Exception):
    """The token endpoint answered with an OAuth error code (the message)."""


class RefreshRejected(Exception):
    """The provider refused the refresh token (``invalid_grant``): the session is over."""


class OIDCClient:
    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        scopes: list[str],
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.scopes = scopes
        self._http = http
        self._clock = clock
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0
        self._metadata_lock = asyncio.Lock()
        self._metadata_refresh: asyncio.Task[None] | None = None
        self._metadata_failure: ProviderUnavailable | None = None
        self._metadata_failed_at = 0.0
        self._jwks: JWKSCache | None = None
        self.client_refused = False
        """The token endpoint last answered ``invalid_client``: the configured secret is wrong."""
        self.authorization_params: dict[str, str] = {}
        """Sent with every sign-in (``[oidc].prompt``, ``extra_authorization_params``)."""
        self.token_params: dict[str, str] = {}
        """Sent with every code exchange and refresh: the ``resource`` asked for at sign-in
        (RFC 8707 2.2), so the access token is the API's whatever the provider's default."""
        self._validators: dict[tuple[str, tuple[str, ...]], tuple[JWKSCache, JWTValidator]] = {}

    @classmethod
    def for_settings(
        cls,
        settings: OidcSection,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> OIDCClient:
        """The client of the provider ``[oidc]`` names."""
        client = cls(
            issuer=settings.issuer,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            scopes=settings.scopes,
            http=http,
            clock=clock,
        )
        prompt = settings.prompt
        if prompt is None and "offline_access" in settings.scopes:
            prompt = "consent"
        client.authorization_params = {
            **({"prompt": prompt} if prompt else {}),
            **settings.extra_authorization_params,
        }
        if resource := settings.extra_authorization_params.get("resource"):
            client.token_params = {"resource": resource}
        return client

    # --- discovery -----------------------------------------------------------------------------

    async def metadata(self) -> ProviderMetadata:
        """The provider's discovery document. Once loaded, it is refreshed every hour in the
        background while the copy serves on; until it has loaded, a failed attempt is not
        repeated for :data:`RETRY_AFTER_FAILURE` seconds (callers fail fast meanwhile)."""
        now = self._clock()
        if self._metadata is not None:
            if now - self._metadata_at >= METADATA_MAX_AGE and self._metadata_refresh is None:
                self._metadata_refresh = asyncio.create_task(self._refresh_metadata())
            return self._metadata
        if (
            self._metadata_failure is not None
            and now - self._metadata_failed_at < RETRY_AFTER_FAILURE
        ):
            raise self._metadata_failure
        async with self._metadata_lock:
            if self._metadata is not None:
                return self._metadata
            try:
                return await self._load_metadata()
            except ProviderUnavailable as exc:
                self._metadata_failure, self._metadata_failed_at = exc, self._clock()
                raise

    async def _refresh_metadata(self) -> None:
        try:
            await self._load_metadata()
        except ProviderUnavailable as exc:
            logger.warning("provider metadata refresh failed, keeping the old: %s", exc)
            self._metadata_at = self._clock()  # try again in an hour, not at every call
        finally:
            self._metadata_refresh = None

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
        self._metadata, self._metadata_at = metadata, self._clock()
        self._metadata_failure = None
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

    # --- login ---------------------------------------------------------------------------------

    def _client_auth(self) -> httpx.BasicAuth:
        # RFC 6749 2.3.1: id and secret are form-encoded before Basic encoding.
        return httpx.BasicAuth(quote(self.client_id, safe=""), quote(self._client_secret, safe=""))

    async def _token_request(self, grant_type: str, **params: str) -> dict[str, Any]:
        """POST to the token endpoint (client_secret_basic); OAuth errors become TokenError."""
        metadata = await self.metadata()
        body = prepare_token_request(grant_type, **params)
        try:
            response = await self._http.post(
                metadata.token_endpoint,
                content=body,
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                },
                auth=self._client_auth(),
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from exc
        try:
            token = response.json()
        except ValueError:
            token = None
        if not isinstance(token, dict):
            raise ProviderUnavailable(
                f"token endpoint answered {response.status_code} without JSON"
            )
        if response.status_code >= 500:
            raise ProviderUnavailable(f"token endpoint answered {response.status_code}")
        if "error" in token or response.status_code != 200:
            error = str(token.get("error", "invalid_request"))
            if error == "invalid_client" and not self.client_refused:
                self.client_refused = True
                logger.error(
                    "the provider refuses this client's credentials: check [oidc].client_id "
                    "and client_secret"
                )
            raise TokenError(error)
        self.client_refused = False
        return token

    async def check_client(self, redirect_uri: str) -> bool:
        """Whether the token endpoint accepts this client's id and secret.

        Asks to exchange a code that cannot exist: a provider that accepts the client answers
        ``invalid_grant``; one that does not, ``invalid_client``. Nothing is issued either way.
        """
        try:
            await self._token_request(
                "authorization_code",
                code=f"flows-bff-client-check-{generate_token(16)}",
                redirect_uri=redirect_uri,
                code_verifier=generate_token(64),
            )
        except TokenError as exc:
            return str(exc) != "invalid_client"
        return True

    async def start_login(
        self, redirect_uri: str, return_to: str, options: dict[str, str] | None = None
    ) -> tuple[str, LoginRequest]:
        """The provider URL to send the browser to, and what to remember until the callback.

        ``options`` are authorization parameters of this sign-in (``prompt``, ``max_age``,
        ``login_hint``, ``acr_values``); they come after the configured ones and win.
        """
        metadata = await self.metadata()
        params = {**self.authorization_params, **(options or {})}
        login = LoginRequest(
            state=generate_token(32),
            nonce=generate_token(32),
            code_verifier=generate_token(64),
            return_to=return_to,
            created_at=self._clock(),
            silent=params.get("prompt") == "none",
        )
        url = prepare_grant_uri(
            metadata.authorization_endpoint,
            client_id=self.client_id,
            response_type="code",
            redirect_uri=redirect_uri,
            scope=" ".join(self.scopes),
            state=login.state,
            nonce=login.nonce,
            code_challenge=create_s256_code_challenge(login.code_verifier),
            code_challenge_method="S256",
            **params,
        )
        return url, login

    async def check_response_issuer(self, iss: str | None) -> None:
        """RFC 9207: the ``iss`` of an authorization response names our provider; a provider
        that says it sends one must send it. :class:`LoginError` otherwise (a mix-up)."""
        metadata = await self.metadata()
        if iss is None:
            if metadata.authorization_response_iss_parameter_supported:
                raise LoginError("the authorization response has no iss (RFC 9207)")
            return
        if iss.rstrip("/") != self.issuer:
            raise LoginError(f"the authorization response comes from issuer {iss!r}")

    async def finish_login(
        self, login: LoginRequest, code: str, redirect_uri: str
    ) -> tuple[TokenSet, dict[str, Any]]:
        """Exchange the code and validate the ID token; returns the tokens and the ID claims."""
        try:
            token = await self._token_request(
                "authorization_code",
                code=code,
                redirect_uri=redirect_uri,
                code_verifier=login.code_verifier,
                **self.token_params,
            )
        except TokenError as exc:
            raise LoginError(f"the provider refused the code: {exc}") from exc
        tokens = _token_set(token, self._clock())
        if not tokens.id_token:
            raise LoginError("the provider returned no ID token")
        claims = await self.validate_id_token(tokens.id_token, nonce=login.nonce)
        return tokens, claims

    async def validate_id_token(self, id_token: str, *, nonce: str | None) -> dict[str, Any]:
        validator = await self.token_validator(self.client_id, await self.id_token_algorithms())
        try:
            claims = await validator.validate(id_token)
        except InvalidToken as exc:
            raise LoginError(f"invalid ID token: {exc}") from exc
        except JWKSUnavailable as exc:
            raise ProviderUnavailable(str(exc)) from exc
        if nonce is not None and claims.get("nonce") != nonce:
            raise LoginError("invalid ID token: nonce mismatch")
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.client_id:
            raise LoginError("invalid ID token: azp does not name this client")
        return claims

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """The userinfo claims; :class:`UserinfoRefused` when the provider refuses the token (a
        4xx: a sign-in that cannot complete), :class:`ProviderUnavailable` when it fails."""
        metadata = await self.metadata()
        if not metadata.userinfo_endpoint:
            return {}
        try:
            response = await self._http.get(
                metadata.userinfo_endpoint, headers={"Authorization": f"Bearer {access_token}"}
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"userinfo failed: {type(exc).__name__}") from exc
        if 400 <= response.status_code < 500:
            raise UserinfoRefused(f"userinfo answered {response.status_code}")
        try:
            response.raise_for_status()
            info = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderUnavailable(f"userinfo failed: {exc}") from exc
        return info if isinstance(info, dict) else {}

    # --- session upkeep ------------------------------------------------------------------------

    async def refresh(self, refresh_token: str) -> TokenSet:
        try:
            token = await self._token_request(
                "refresh_token", refresh_token=refresh_token, **self.token_params
            )
        except TokenError as exc:
            if str(exc) in {"invalid_grant", "invalid_token", "unauthorized_client"}:
                raise RefreshRejected(str(exc)) from exc
            raise ProviderUnavailable(f"refresh failed: {exc}") from exc
        tokens = _token_set(token, self._clock())
        if tokens.refresh_token is None:
            # Providers that do not rotate keep the refresh token valid: carry it over.
            tokens = msgspec.structs.replace(tokens, refresh_token=refresh_token)
        return tokens

    async def revoke(self, refresh_token: str) -> None:
        """Best effort: a provider without revocation, or one that is down, only gets logged."""
        try:
            metadata = await self.metadata()
            if not metadata.revocation_endpoint:
                return
            response = await self._http.post(
                metadata.revocation_endpoint,
                data={"token": refresh_token, "token_type_hint": "refresh_token"},
                auth=self._client_auth(),
            )
            if response.status_code != 200:
                logger.warning("refresh token revocation answered %s", response.status_code)
        except (httpx.HTTPError, ProviderUnavailable) as exc:
            logger.warning("refresh token revocation failed: %s", type(exc).__name__)

    async def end_session_url(
        self,
        post_logout_redirect: str,
        *,
        id_token_hint: str | None = None,
        logout_hint: str | None = None,
    ) -> str | None:
        """RP-Initiated Logout: the provider's end-session URL naming this client, with a hint
        only when given (the caller decides by configuration whether a token goes in a URL)."""
        try:
            metadata = await self.metadata()
        except ProviderUnavailable:
            return None
        if not metadata.end_session_endpoint:
            return None
        params = {"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        if logout_hint:
            params["logout_hint"] = logout_hint
        separator = "&" if "?" in metadata.end_session_endpoint else "?"
        return f"{metadata.end_session_endpoint}{separator}{urlencode(params)}"


def _token_set(token: dict[str, Any], now: float) -> TokenSet:
    expires_at = token.get("expires_at")
    expires_in = token.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
        expires_in = int(expires_in)  # some providers send a string
    if expires_at is None and isinstance(expires_in, int | float):
        expires_at = now + float(expires_in)
    if expires_at is None:
        expires_at = _jwt_expiry(token.get("access_token"))
    expires = float(expires_at) if expires_at is not None else None
    return TokenSet(
        access_token=token.get("access_token"),
        refresh_token=token.get("refresh_token"),
        id_token=token.get("id_token"),
        expires_at=expires,
        lifetime=expires - now if expires is not None and expires > now else None,
    )


def _jwt_expiry(access_token: object) -> float | None:
    """``exp`` of an access token that is a JWT: only to know when to refresh, never to trust it."""
    if not isinstance(access_token, str) or access_token.count(".") != 2:
        return None
    payload = access_token.split(".")[1]
    try:
        claims = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, msgspec.DecodeError, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
