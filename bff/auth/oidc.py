"""The gateway as an OpenID Connect relying party (a confidential client): the protocol steps.

The authorization request with PKCE (S256), ``state`` and ``nonce``; the RFC 9207 ``iss`` check
of the response; the code exchange and ID token validation; the end-session URL. It stands on
three smaller pieces: :mod:`bff.auth.discovery` (metadata and keys), :mod:`bff.auth.token_endpoint`
(the calls that answer the client) and :mod:`bff.auth.client_auth` (how the client proves
itself). The protocol messages are authlib's (``prepare_grant_uri``, the S256 challenge); they
travel over the gateway's own httpx client, which holds no per-user state: tokens live only in the
session store, never on an object shared between users' calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from ..settings import ConfigError, OidcSection
from ..state.logins import LoginRequest
from .client_auth import (
    ClientAuthentication,
    ClientSecretBasic,
    PrivateKeyJwt,
    client_authentication,
    client_jwks,
)
from .discovery import Discovery, ProviderMetadata, ProviderUnavailable
from .dpop import ALGORITHM as DPOP_ALGORITHM
from .dpop import DPoPKey
from .jwt_validation import InvalidToken, JWKSUnavailable
from .token_endpoint import (
    ClientMethodRefused,
    LoginError,
    ParRefused,
    TokenEndpoint,
    TokenSet,
)

logger = logging.getLogger("bff.oidc")


class OIDCClient:
    """The provider at ``issuer`` as this client sees it: :attr:`discovery` and :attr:`tokens`,
    and the sign-in steps over them."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        scopes: list[str],
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
        authorization_params: dict[str, str] | None = None,
        token_params: dict[str, str] | None = None,
        client_auth: ClientAuthentication | None = None,
        par: str = "never",
        dpop: bool = False,
        fapi2: bool = False,
    ) -> None:
        self.client_id = client_id
        self.scopes = scopes
        self.par = par
        self.dpop = dpop
        """Bind each session's tokens to a key of its own (RFC 9449)."""
        self.fapi2 = fapi2
        """``[oidc].profile = "fapi2"``: an authorization response must name its issuer."""
        self.authorization_params = authorization_params or {}
        """Sent with every sign-in (``[oidc].prompt``, ``extra_authorization_params``)."""
        self._clock = clock
        self.discovery = Discovery(issuer, http=http, clock=clock)
        self._client_auth = client_auth or ClientSecretBasic(client_id, client_secret)
        self.tokens = TokenEndpoint(
            self.discovery,
            self._client_auth,
            http=http,
            token_params=token_params,
            clock=clock,
        )

    @classmethod
    def for_settings(
        cls,
        settings: OidcSection,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> OIDCClient:
        """The client of the provider ``[oidc]`` names."""
        prompt = settings.prompt
        if prompt is None and "offline_access" in settings.scopes:
            prompt = "consent"
        resource = settings.extra_authorization_params.get("resource")
        return cls(
            issuer=settings.issuer,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            scopes=settings.scopes,
            http=http,
            clock=clock,
            authorization_params={
                **({"prompt": prompt} if prompt else {}),
                **settings.extra_authorization_params,
            },
            token_params={"resource": resource} if resource else None,
            client_auth=client_authentication(settings, clock=clock),
            par=settings.par,
            dpop=settings.dpop,
            fapi2=settings.profile == "fapi2",
        )

    async def refuse_unless_taken(self) -> None:
        """At start: :class:`~bff.settings.ConfigError` when the provider says it does not take
        ``[oidc].client_auth``, DPoP or what the FAPI 2.0 profile needs; a provider that does not
        answer yet is asked again at the first sign-in, and by ``/readyz``. The defaults are not
        asked about at start (a provider that lists no method takes the default, RFC 8414), so
        the provider is contacted first when needed."""
        if self.tokens.method == "client_secret_basic" and not self.dpop and not self.fapi2:
            return
        try:
            async with asyncio.timeout(2.0):
                known = await self.discovery.early_metadata()
        except TimeoutError:
            known = None
        if known is None:
            logger.warning("the provider does not answer yet; its metadata is read when needed")
            return
        try:
            metadata = await self.tokens.check_method()
        except ClientMethodRefused as exc:
            raise ConfigError(str(exc)) from None
        missing = self.missing(metadata)
        if missing:
            raise ConfigError(missing[0])

    def missing(self, metadata: ProviderMetadata) -> list[str]:
        """What the settings ask of the provider that its metadata says it does not offer."""
        missing = []
        if self.dpop and DPOP_ALGORITHM not in (metadata.dpop_signing_alg_values_supported or []):
            missing.append(
                f"[oidc].dpop: the provider does not take {DPOP_ALGORITHM} DPoP proofs (its "
                "dpop_signing_alg_values_supported: "
                f"{', '.join(metadata.dpop_signing_alg_values_supported or []) or 'none'})"
            )
        if self.fapi2:
            if metadata.pushed_authorization_request_endpoint is None:
                missing.append(
                    '[oidc].profile = "fapi2": the provider offers no pushed authorization '
                    "requests (pushed_authorization_request_endpoint)"
                )
            if not metadata.authorization_response_iss_parameter_supported:
                missing.append(
                    '[oidc].profile = "fapi2": the provider does not say it names itself in '
                    "authorization responses (authorization_response_iss_parameter_supported)"
                )
            if "S256" not in (metadata.code_challenge_methods_supported or []):
                missing.append(
                    '[oidc].profile = "fapi2": the provider does not list PKCE S256 '
                    "(code_challenge_methods_supported)"
                )
        return missing

    def client_jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public keys of this client's assertions (none unless ``private_key_jwt``)."""
        keys = self._client_auth.keys if isinstance(self._client_auth, PrivateKeyJwt) else []
        return client_jwks(keys)

    async def start_login(
        self, redirect_uri: str, return_to: str, options: dict[str, str] | None = None
    ) -> tuple[str, LoginRequest]:
        """The provider URL to send the browser to, and what to remember until the callback.

        ``options`` are authorization parameters of this sign-in (``prompt``, ``max_age``,
        ``login_hint``, ``acr_values``); they come after the configured ones and win.
        """
        metadata = await self.discovery.metadata()
        params = {**self.authorization_params, **(options or {})}
        key = DPoPKey.generate() if self.dpop else None
        login = LoginRequest(
            state=generate_token(32),
            nonce=generate_token(32),
            code_verifier=generate_token(64),
            return_to=return_to,
            created_at=self._clock(),
            silent=params.get("prompt") == "none",
            dpop_key=key.to_jwk() if key is not None else None,
        )
        request = {
            "client_id": self.client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.scopes),
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": create_s256_code_challenge(login.code_verifier),
            "code_challenge_method": "S256",
            **params,
        }
        endpoint = metadata.authorization_endpoint
        if self._pushes(metadata):
            # RFC 9126: the parameters go over the back channel; the browser carries a reference.
            # With DPoP, the proof sent with them binds the code to the session's key.
            request_uri = await self.tokens.push(request, key)
            query = urlencode({"client_id": self.client_id, "request_uri": request_uri})
            return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", login
        if key is not None:
            request["dpop_jkt"] = key.thumbprint  # RFC 9449 10: the code is bound to the key
        return prepare_grant_uri(endpoint, **request), login

    def _pushes(self, metadata: ProviderMetadata) -> bool:
        """Whether this sign-in's request is pushed (``[oidc].par``); :class:`ParRefused` when
        the provider requires it and the settings forbid it."""
        if self.par == "never" and metadata.require_pushed_authorization_requests:
            raise ParRefused(
                "the provider requires pushed authorization requests, and [oidc].par is 'never'"
            )
        return (
            self.par == "always"
            or self.fapi2
            or (self.par == "auto" and metadata.pushed_authorization_request_endpoint is not None)
        )

    async def check_response_issuer(self, iss: str | None) -> None:
        """RFC 9207: the ``iss`` of an authorization response names our provider; a provider
        that says it sends one must send it. :class:`LoginError` otherwise (a mix-up)."""
        metadata = await self.discovery.metadata()
        if iss is None:
            if self.fapi2 or metadata.authorization_response_iss_parameter_supported:
                raise LoginError("the authorization response has no iss (RFC 9207)")
            return
        if iss.rstrip("/") != self.discovery.issuer:
            raise LoginError(f"the authorization response comes from issuer {iss!r}")

    async def finish_login(
        self, login: LoginRequest, code: str, redirect_uri: str
    ) -> tuple[TokenSet, dict[str, Any]]:
        """Exchange the code and validate the ID token; returns the tokens and the ID claims."""
        tokens = await self.tokens.exchange(
            code,
            redirect_uri=redirect_uri,
            code_verifier=login.code_verifier,
            dpop=DPoPKey.kept(login.dpop_key),
        )
        if not tokens.id_token:
            raise LoginError("the provider returned no ID token")
        claims = await self.validate_id_token(tokens.id_token, nonce=login.nonce)
        return tokens, claims

    async def validate_id_token(self, id_token: str, *, nonce: str | None) -> dict[str, Any]:
        discovery = self.discovery
        validator = await discovery.token_validator(
            self.client_id, await discovery.id_token_algorithms()
        )
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
            metadata = await self.discovery.metadata()
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
