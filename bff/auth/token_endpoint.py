"""The provider's endpoints that answer the client itself: token (code exchange, refresh),
revocation and userinfo.

Each call that authenticates the client does so through :mod:`bff.auth.client_auth`. OAuth
errors of the token endpoint become :class:`TokenError` (with the error code), and from there the
exceptions each caller acts on::

    Exception
    ├── ProviderUnavailable (bff.auth.discovery)
    │   └── ClientMethodRefused   the provider does not take [oidc].client_auth
    ├── LoginError            the sign-in cannot complete (bad code, bad ID token, provider error)
    │   ├── UserinfoRefused   the userinfo endpoint refused a fresh access token (a 4xx)
    │   └── ParRefused        the provider refused the pushed authorization request
    ├── TokenError            the token endpoint answered an OAuth error code (the message)
    │   └── NotBound          tokens asked for with a DPoP proof came back unbound
    └── RefreshRejected       the provider refused the refresh token: the session is over

where ``ProviderUnavailable`` means the provider cannot be reached or answers outside the
protocol.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_token_request

from .client_auth import ClientAuthentication
from .discovery import Discovery, ProviderMetadata, ProviderUnavailable
from .dpop import DPoPKey, Nonces

logger = logging.getLogger("bff.oidc")

_WHAT_PROVES_IT = {
    "private_key_jwt": "the keys it fetches from /api/bff/v1/.well-known/client-jwks.json",
    "tls_client_auth": "client_cert_file (the certificate registered for the client)",
}


class TokenSet(msgspec.Struct, frozen=True):
    access_token: str | None
    refresh_token: str | None
    id_token: str | None
    expires_at: float | None
    lifetime: float | None = None
    """Seconds the access token was good for when issued (what the refresh margin scales to)."""
    token_type: str | None = None


class LoginError(Exception):
    """The login cannot complete (bad code, bad ID token, provider error)."""


class UserinfoRefused(LoginError):
    """The provider refused our fresh access token at its userinfo endpoint (a 4xx)."""


class ClientMethodRefused(ProviderUnavailable):
    """The provider does not take the client authentication method of ``[oidc].client_auth``."""


class ParRefused(LoginError):
    """The provider refused the pushed authorization request; the message is its reason."""


class TokenError(Exception):
    """The token endpoint answered with an OAuth error code (the message)."""


class NotBound(TokenError):
    """Tokens asked for with a DPoP proof came back as another type (RFC 9449 5)."""


class RefreshRejected(Exception):
    """The provider refused the refresh token (``invalid_grant``): the session is over."""


class TokenEndpoint:
    """The client's calls to the provider. ``token_params`` go with every code exchange and
    refresh: the ``resource`` asked for at sign-in (RFC 8707 2.2), so the access token is the
    API's whatever the provider's default."""

    def __init__(
        self,
        discovery: Discovery,
        client: ClientAuthentication,
        *,
        http: httpx.AsyncClient,
        token_params: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._discovery = discovery
        self._client = client
        self._http = http
        self._clock = clock
        self.token_params = token_params or {}
        self._nonces = Nonces()
        self.client_refused = False
        """The token endpoint last answered ``invalid_client``: the credentials are wrong."""

    @property
    def method(self) -> str:
        """How the client proves itself (``[oidc].client_auth``)."""
        return self._client.method

    async def check_method(self) -> ProviderMetadata:
        """The provider's metadata, once it is known to take this client's method (RFC 8414:
        ``client_secret_basic`` when it lists none); :class:`ClientMethodRefused` if not."""
        metadata = await self._discovery.metadata()
        offered = metadata.token_endpoint_auth_methods_supported or ["client_secret_basic"]
        if self._client.method not in offered:
            raise ClientMethodRefused(
                f"[oidc].client_auth: {self._client.method!r} is not among the methods the "
                f"provider takes ({', '.join(offered)}: its token_endpoint_auth_methods_supported)"
            )
        return metadata

    def _endpoint(self, name: str, endpoint: str, metadata: ProviderMetadata) -> str:
        """Where a call that authenticates the client goes: with ``tls_client_auth``, the
        endpoint's RFC 8705 alias when there is one."""
        if self._client.method == "tls_client_auth":
            return (metadata.mtls_endpoint_aliases or {}).get(name, endpoint)
        return endpoint

    def _credentials(
        self, endpoint: str, metadata: ProviderMetadata
    ) -> tuple[httpx.Auth, dict[str, str]]:
        """What proves the client at ``endpoint``, for one request: a client assertion is
        spent by the request that carries it (RFC 7523 3: the provider remembers its ``jti``)."""
        algorithms = metadata.token_endpoint_auth_signing_alg_values_supported
        return self._client.credentials(endpoint, algorithms=algorithms)

    async def _request(
        self, grant_type: str, dpop: DPoPKey | None = None, **params: str
    ) -> dict[str, Any]:
        """POST to the token endpoint (with a proof of ``dpop``); OAuth errors become
        :class:`TokenError`, and a DPoP request answered with another token type too."""
        metadata = await self.check_method()
        endpoint = self._endpoint("token_endpoint", metadata.token_endpoint, metadata)

        def form() -> tuple[httpx.Auth, str]:
            auth, fields = self._credentials(endpoint, metadata)
            return auth, prepare_token_request(grant_type, **params, **fields)

        status, token = await self._post("token endpoint", endpoint, form, dpop)
        if dpop is not None and status == 200 and "error" not in token:
            _check_bound(token)
        if "error" in token or status != 200:
            error = str(token.get("error", "invalid_request"))
            if error == "invalid_client" and not self.client_refused:
                self.client_refused = True
                logger.error(
                    "the provider refuses this client's credentials (%s): check [oidc].client_id "
                    "and %s",
                    self._client.method,
                    _WHAT_PROVES_IT.get(self._client.method, "client_secret"),
                )
            raise TokenError(error)
        self.client_refused = False
        return token

    async def _post(
        self,
        what: str,
        endpoint: str,
        form: Callable[[], tuple[httpx.Auth, str]],
        dpop: DPoPKey | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST a form to one of the provider's endpoints; the status and the JSON object it
        answered. :class:`ProviderUnavailable` when it cannot be reached, answers without a
        JSON object, or answers 5xx. ``form()`` gives each request's authentication and body.

        With ``dpop``, the request carries a proof with the provider's latest nonce; asked for
        a newer one (``use_dpop_nonce``, RFC 9449 8), it is sent once more with that, and with
        new client credentials (the first request spent its assertion, even though refused)."""
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        for attempt in (1, 2):
            if dpop is not None:
                nonce = self._nonces.get(endpoint)
                headers["DPoP"] = dpop.proof("POST", endpoint, nonce=nonce, now=self._clock())
            auth, content = form()
            try:
                response = await self._http.post(
                    endpoint, content=content, headers=headers, auth=auth
                )
            except httpx.HTTPError as exc:
                raise ProviderUnavailable(f"{what} unreachable: {type(exc).__name__}") from exc
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                raise ProviderUnavailable(f"{what} answered {response.status_code} without JSON")
            if response.status_code >= 500:
                raise ProviderUnavailable(f"{what} answered {response.status_code}")
            renewed = dpop is not None and self._nonces.remember(endpoint, response.headers)
            if attempt == 1 and renewed and answer.get("error") == "use_dpop_nonce":
                continue
            return response.status_code, answer
        return response.status_code, answer

    async def push(self, params: dict[str, str], dpop: DPoPKey | None = None) -> str:
        """A pushed authorization request (RFC 9126): the ``request_uri`` the browser carries
        instead of ``params``; with ``dpop``, its code is bound to that key (RFC 9449 10.1).
        :class:`LoginError` with the provider's reason if it refuses."""
        metadata = await self.check_method()
        if not metadata.pushed_authorization_request_endpoint:
            raise ParRefused("the provider offers no pushed authorization requests")
        endpoint = self._endpoint(
            "pushed_authorization_request_endpoint",
            metadata.pushed_authorization_request_endpoint,
            metadata,
        )

        def form() -> tuple[httpx.Auth, str]:
            auth, fields = self._credentials(endpoint, metadata)
            return auth, urlencode({**params, **fields})

        status, answer = await self._post("PAR endpoint", endpoint, form, dpop)
        request_uri = answer.get("request_uri")
        if status in (200, 201) and isinstance(request_uri, str) and request_uri:
            return request_uri
        raise ParRefused(_oauth_reason(answer))

    async def check_client(self, redirect_uri: str) -> bool:
        """Whether the token endpoint accepts this client's credentials.

        Asks to exchange a code that cannot exist: a provider that accepts the client answers
        ``invalid_grant``; one that does not, ``invalid_client``. Nothing is issued either way.
        """
        try:
            await self._request(
                "authorization_code",
                code=f"flows-bff-client-check-{generate_token(16)}",
                redirect_uri=redirect_uri,
                code_verifier=generate_token(64),
            )
        except TokenError as exc:
            return str(exc) != "invalid_client"
        return True

    async def exchange(
        self, code: str, *, redirect_uri: str, code_verifier: str, dpop: DPoPKey | None = None
    ) -> TokenSet:
        """The tokens for an authorization code (with its PKCE verifier), bound to ``dpop``."""
        try:
            token = await self._request(
                "authorization_code",
                dpop,
                code=code,
                redirect_uri=redirect_uri,
                code_verifier=code_verifier,
                **self.token_params,
            )
        except NotBound as exc:
            raise LoginError(str(exc)) from exc
        except TokenError as exc:
            raise LoginError(f"the provider refused the code: {exc}") from exc
        return _token_set(token, self._clock())

    async def refresh(self, refresh_token: str, dpop: DPoPKey | None = None) -> TokenSet:
        """New tokens for a session's refresh token, bound to its key ``dpop``."""
        try:
            token = await self._request(
                "refresh_token", dpop, refresh_token=refresh_token, **self.token_params
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
            metadata = await self.check_method()
            if not metadata.revocation_endpoint:
                return
            endpoint = self._endpoint("revocation_endpoint", metadata.revocation_endpoint, metadata)
            auth, fields = self._credentials(endpoint, metadata)
            response = await self._http.post(
                endpoint,
                data={"token": refresh_token, "token_type_hint": "refresh_token", **fields},
                auth=auth,
            )
            if response.status_code != 200:
                logger.warning("refresh token revocation answered %s", response.status_code)
        except (httpx.HTTPError, ProviderUnavailable) as exc:
            logger.warning("refresh token revocation failed: %s", type(exc).__name__)

    async def userinfo(self, access_token: str, dpop: DPoPKey | None = None) -> dict[str, Any]:
        """The userinfo claims (an access token bound to ``dpop`` goes with a proof);
        :class:`UserinfoRefused` when the provider refuses the token (a 4xx: a sign-in that
        cannot complete), :class:`ProviderUnavailable` when it fails."""
        metadata = await self._discovery.metadata()
        endpoint = metadata.userinfo_endpoint
        if not endpoint:
            return {}
        try:
            for attempt in (1, 2):
                headers = {"Authorization": f"Bearer {access_token}"}
                if dpop is not None:
                    nonce = self._nonces.get(endpoint)
                    headers = dpop.headers("GET", endpoint, access_token, nonce, self._clock())
                response = await self._http.get(endpoint, headers=headers)
                renewed = dpop is not None and self._nonces.remember(endpoint, response.headers)
                challenge = response.headers.get("www-authenticate", "")
                if not (attempt == 1 and renewed and "use_dpop_nonce" in challenge):
                    break
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


def _check_bound(token: dict[str, Any]) -> None:
    """RFC 9449 5: tokens asked for with a proof must come back bound to its key; a bearer token
    is not what ``[oidc].dpop`` promises, so it is not used (:class:`NotBound`)."""
    token_type = token.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "dpop":
        raise NotBound(
            f"the provider did not bind the tokens to the DPoP key (token_type {token_type!r}): "
            "it must support DPoP, or set [oidc].dpop = false"
        )


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
        token_type=token.get("token_type") if isinstance(token.get("token_type"), str) else None,
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


_OAUTH_ERROR = re.compile(r"[a-z_]{1,64}")
_PRINTABLE = re.compile(r"[ -~]{1,200}")


def _oauth_reason(answer: dict[str, Any]) -> str:
    """An OAuth error answer in a few safe words: its code and, when plain, its description."""
    code, description = answer.get("error"), answer.get("error_description")
    reason = code if isinstance(code, str) and _OAUTH_ERROR.fullmatch(code) else "refused"
    if isinstance(description, str) and _PRINTABLE.fullmatch(description):
        reason += f": {description}"
    return reason
