"""Dashboard sign-in and the two ways a call is authenticated.

Routes (under ``/api/bff/v1``): ``GET /auth/login`` → the provider; ``GET /auth/callback`` →
a fresh server-side session and an HttpOnly cookie; ``GET /auth/session`` (who am I);
``POST /auth/logout``; ``POST /auth/backchannel-logout`` (OIDC Back-Channel Logout 1.0);
``GET /.well-known/jwks.json`` (keys of the BFF-minted upstream tokens).

Authenticators: :meth:`Auth.bearer` (``Authorization: Bearer <JWT>``, no CSRF header needed) and
:meth:`Auth.session` (the cookie, with the CSRF checks, and an inline single-flight token refresh
before anything is forwarded).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .jwt_validation import InvalidToken, JWKSUnavailable, LogoutTokenValidator, ReplayCache
from .logins import LoginStore
from .oidc import LoginError, OIDCClient, ProviderUnavailable, RefreshRejected, TokenSet
from .principal import Principal, permissions, tenants_from_claim, tenants_from_scope
from .problems import FieldError, ProblemError, validation_error
from .refresh_locks import LocalRefreshLock, RefreshLock
from .sessions import Session, SessionStore, hash_session_id
from .settings import Settings
from .upstream_tokens import UpstreamTokenMinter

logger = logging.getLogger("bff.auth")

Endpoint = Callable[[Request], Awaitable[Response]]

CALLBACK_PATH = "/api/bff/v1/auth/callback"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_OAUTH_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
REFRESH_WAIT_SECONDS = 10.0
REFRESH_POLL_SECONDS = 0.05
_JSON_TYPES = ("application/json",)
_BACKCHANNEL_MAX_BYTES = 32 * 1024


class CookieNames(msgspec.Struct, frozen=True):
    session: str
    login: str

    @classmethod
    def for_settings(cls, settings: Settings) -> CookieNames:
        # The __Host- prefix pins a cookie to this exact origin (Secure, Path=/, no Domain);
        # browsers accept it only over https, so loopback development uses plain names.
        prefix = "__Host-" if settings.secure_cookies else ""
        return cls(session=f"{prefix}bff_session", login=f"{prefix}bff_login")


def _session_expired(detail: str, clear_cookie: str | None = None) -> ProblemError:
    headers = {"WWW-Authenticate": 'Bearer realm="flows-bff", error="invalid_token"'}
    if clear_cookie:
        # A __Host- cookie is only ever set, or deleted, by a Set-Cookie that says Secure.
        secure = "; Secure" if clear_cookie.startswith("__Host-") else ""
        headers["Set-Cookie"] = (
            f"{clear_cookie}=; Max-Age=0; Path=/; HttpOnly; SameSite=strict{secure}"
        )
    return ProblemError(401, "session-expired", detail, headers=headers)


def _signin_unavailable() -> ProblemError:
    return ProblemError(
        503,
        "upstream-unavailable",
        "Sign-in is temporarily unavailable.",
        headers={"Retry-After": "5"},
    )


def _csrf_failed(detail: str) -> ProblemError:
    return ProblemError(403, "csrf-check-failed", detail)


def check_csrf(request: Request, allowed_origins: frozenset[str]) -> None:
    """Cookie-authenticated calls must prove they come from our own page's script."""
    if request.headers.get("x-csrf") != "1":
        raise _csrf_failed("Send the X-CSRF: 1 header with every API call.")
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is not None:
        if origin.lower() not in allowed_origins:
            raise _csrf_failed("This origin may not make changes.")
    elif request.headers.get("sec-fetch-site") != "same-origin":
        raise _csrf_failed("Changes need an Origin header from the dashboard.")
    content_type = request.headers.get("content-type")
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    if content_type is not None or has_body:
        media = (content_type or "").split(";")[0].strip().lower()
        if media not in _JSON_TYPES:
            raise _csrf_failed("Changes must be sent as application/json.")


def safe_return_to(value: str | None) -> str:
    """A local path to come back to after sign-in; anything else would be an open redirect."""
    if not value:
        return "/"
    parts = urlsplit(value)
    if (
        len(value) > 2048
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or parts.scheme
        or parts.netloc
        or any(ch < " " or ch in "\\\x7f" for ch in value)
    ):
        raise validation_error(
            [FieldError("returnTo", "Must be a path on this site, like /flows.", "invalid")]
        )
    return value


def tenants_from_claims(claims: dict[str, Any], claim_name: str) -> dict[str, frozenset[str]]:
    if claim_name in claims:
        return tenants_from_claim(claims[claim_name])
    tenant_ids = claims.get("tenants") or (
        [claims["tenant_id"]] if isinstance(claims.get("tenant_id"), str) else []
    )
    if not isinstance(tenant_ids, list):
        tenant_ids = []
    return tenants_from_scope(tenant_ids, claims.get("scope"))


class SessionView(msgspec.Struct, rename="camel"):
    user: dict[str, str | None]
    tenants: list[dict[str, Any]]
    expires_at: str


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Auth:
    """Sign-in, sessions and credentials of one BFF app."""

    def __init__(
        self,
        settings: Settings,
        *,
        oidc: OIDCClient,
        sessions: SessionStore,
        logins: LoginStore,
        refresh_lock: RefreshLock | None = None,
        replay_cache: ReplayCache | None = None,
        minter: UpstreamTokenMinter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.oidc = oidc
        self.sessions = sessions
        self.logins = logins
        self.refresh_lock = refresh_lock or LocalRefreshLock()
        self._replay_cache = replay_cache
        self.minter = minter
        self.cookies = CookieNames.for_settings(settings)
        self._clock = clock
        self._refreshing: dict[str, asyncio.Task[Session]] = {}
        self._logout_validator: LogoutTokenValidator | None = None
        self._allowed_origins = settings.allowed_origins
        self._redirect_uri = settings.bff.public_origin.rstrip("/") + CALLBACK_PATH

    def _ended(self) -> ProblemError:
        return _session_expired("Your session has ended; sign in again.", self.cookies.session)

    # --- authenticators ------------------------------------------------------------------------

    async def bearer(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProblemError(
                401,
                "authentication-required",
                "Use Authorization: Bearer <token>.",
                headers={"WWW-Authenticate": 'Bearer realm="flows-bff", error="invalid_request"'},
            )
        audience = self.settings.oidc.bearer_audience or self.settings.oidc.client_id
        try:
            validator = await self.oidc.token_validator(audience)
            claims = await validator.validate(token.strip())
            if "nonce" in claims:
                # Our sign-in's ID tokens carry a nonce, access tokens never do. An ID token names
                # this client as audience and reaches the browser in the end-session URL: it must
                # not outlive the session as a bearer credential.
                raise InvalidToken("id-token", "an ID token is not a bearer token")
        except InvalidToken as exc:
            logger.info("bearer token rejected: %s", exc.reason)
            raise ProblemError(
                401,
                "authentication-required",
                "The bearer token is not valid.",
                headers={"WWW-Authenticate": 'Bearer realm="flows-bff", error="invalid_token"'},
            ) from None
        except (JWKSUnavailable, ProviderUnavailable) as exc:
            logger.warning("cannot validate bearer tokens: %s", exc)
            raise _signin_unavailable() from None
        return Principal(
            subject=claims["sub"],
            tenants=tenants_from_claims(claims, self.settings.oidc.tenants_claim),
            via="bearer",
            name=claims.get("name"),
            email=claims.get("email"),
            access_token=token.strip(),
        )

    async def session(self, request: Request) -> Principal | None:
        current = await self._current(request)
        return None if current is None else _principal(current[1])

    async def _current(self, request: Request) -> tuple[str, Session] | None:
        """The cookie's session, CSRF-checked and with a fresh access token; None without one."""
        raw_id = request.cookies.get(self.cookies.session)
        if not raw_id:
            return None
        check_csrf(request, self._allowed_origins)
        session = await self.sessions.get(raw_id)
        if session is None:
            raise self._ended()
        return raw_id, await self._fresh(raw_id, session)

    async def _fresh(self, raw_id: str, session: Session) -> Session:
        """The session with an access token good for the margin, refreshed inline if needed."""
        if not self._needs_refresh(session):
            return session
        # Two tabs of one browser must not both spend a rotating refresh token.
        task = self._refreshing.get(raw_id)
        if task is None:
            task = asyncio.ensure_future(self._refresh(raw_id, session))
            self._refreshing[raw_id] = task
            task.add_done_callback(lambda _: self._refreshing.pop(raw_id, None))
        return await asyncio.shield(task)

    def _needs_refresh(self, session: Session) -> bool:
        expires = session.access_expires_at
        margin = self.settings.oidc.refresh_margin_seconds
        return expires is not None and expires - margin <= self._clock()

    async def _refresh(self, raw_id: str, session: Session) -> Session:
        # Other instances sharing the session store must not refresh at the same time either.
        lock_key = hash_session_id(raw_id)
        deadline = time.monotonic() + REFRESH_WAIT_SECONDS
        while (held := await self.refresh_lock.acquire(lock_key)) is None:
            # Another instance is refreshing: wait until it stores the new tokens, or until it
            # lets go of the lock without them (provider down) and this one may try as it did.
            if time.monotonic() >= deadline:
                raise _signin_unavailable()
            await asyncio.sleep(REFRESH_POLL_SECONDS)
            current = await self.sessions.get(raw_id)
            if current is None:
                raise self._ended()
            if not self._needs_refresh(current):
                return current
        try:
            # Another instance may have refreshed between our read and taking the lock.
            current = await self.sessions.get(raw_id)
            if current is None:
                raise self._ended()
            if not self._needs_refresh(current):
                return current
            return await self._refresh_holding_lock(raw_id, current)
        finally:
            await self.refresh_lock.release(lock_key, held)

    async def _refresh_holding_lock(self, raw_id: str, session: Session) -> Session:
        if not session.refresh_token:
            if self.settings.upstream.credential == "relay":
                await self.sessions.delete(raw_id)
                raise _session_expired("Your sign-in has expired.", self.cookies.session)
            return session
        try:
            tokens = await self.oidc.refresh(session.refresh_token)
        except RefreshRejected:
            await self.sessions.delete(raw_id)
            raise _session_expired(
                "Your sign-in has expired; sign in again.", self.cookies.session
            ) from None
        except ProviderUnavailable as exc:
            logger.warning("token refresh failed: %s", exc)
            expires = session.access_expires_at
            if expires is not None and expires > self._clock():
                return session  # still valid for a little while: try again next call
            if self.settings.upstream.credential == "internal-jwt":
                # The upstream credential is minted here: the session, still within its own
                # timeouts, serves on; the next call tries the provider again.
                return session
            raise _signin_unavailable() from None
        session = msgspec.structs.replace(
            session,
            access_token=tokens.access_token or session.access_token,
            refresh_token=tokens.refresh_token,
            id_token=tokens.id_token or session.id_token,
            access_expires_at=tokens.expires_at,
        )
        if not await self.sessions.save(raw_id, session):
            raise self._ended()
        return session

    # --- routes --------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        unknown = set(request.query_params) - {"returnTo"}
        if unknown:
            raise validation_error(
                [FieldError(k, "Unknown query parameter.", "unknown_parameter") for k in unknown]
            )
        return_to = safe_return_to(request.query_params.get("returnTo"))
        try:
            url, login = await self.oidc.start_login(self._redirect_uri, return_to)
        except ProviderUnavailable as exc:
            logger.error("cannot start sign-in: %s", exc)
            raise _signin_unavailable() from None
        handle = secrets.token_urlsafe(32)
        await self.logins.put(handle, login)
        response = RedirectResponse(url, status_code=302)
        # Lax, not Strict: the provider's redirect back to the callback is a cross-site
        # top-level navigation, and it must carry this cookie.
        response.set_cookie(
            self.cookies.login,
            handle,
            max_age=600,
            path="/",
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        return response

    async def callback(self, request: Request) -> Response:
        handle = request.cookies.get(self.cookies.login)
        login = await self.logins.take(handle) if handle else None
        if login is None:
            raise _login_failed("This sign-in has expired or was already used; start again.")
        if "error" in request.query_params:
            # Only a well-formed OAuth error code is repeated back, never arbitrary text.
            code = request.query_params["error"]
            reason = f" ({code})" if _OAUTH_ERROR_CODE.fullmatch(code) else ""
            raise _login_failed(f"The identity provider refused the sign-in{reason}.")
        state = request.query_params.get("state", "")
        code = request.query_params.get("code", "")
        if not secrets.compare_digest(state.encode(), login.state.encode()) or not code:
            raise _login_failed("The sign-in response does not match this browser's request.")
        try:
            tokens, claims = await self.oidc.finish_login(login, code, self._redirect_uri)
            if self.settings.oidc.tenants_claim not in claims and tokens.access_token:
                userinfo = await self.oidc.userinfo(tokens.access_token)
                # OpenID Connect Core 5.3.2: an answer about another subject must not be used.
                if userinfo.get("sub") == claims["sub"]:
                    claims = {**userinfo, **claims}
        except LoginError as exc:
            logger.warning("sign-in failed: %s", exc)
            raise _login_failed("The sign-in could not be completed; start again.") from None
        except ProviderUnavailable as exc:
            logger.error("sign-in failed, provider unavailable: %s", exc)
            raise _signin_unavailable() from None
        # A fresh id for every sign-in: an id planted before it (fixation) is worthless.
        previous = request.cookies.get(self.cookies.session)
        if previous:
            await self.sessions.delete(previous)
        raw_id = await self.sessions.create(self._new_session(tokens, claims))
        response = RedirectResponse(login.return_to, status_code=302)
        self._set_session_cookie(response, raw_id)
        response.delete_cookie(
            self.cookies.login, path="/", secure=self.settings.secure_cookies, httponly=True
        )
        return response

    def _new_session(self, tokens: TokenSet, claims: dict[str, Any]) -> Session:
        tenants = tenants_from_claims(claims, self.settings.oidc.tenants_claim)
        return Session(
            sub=claims["sub"],
            name=claims.get("name"),
            email=claims.get("email"),
            tenants={tenant: sorted(scopes) for tenant, scopes in tenants.items()},
            id_token=tokens.id_token,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            access_expires_at=tokens.expires_at,
            sid=claims.get("sid") if isinstance(claims.get("sid"), str) else None,
        )

    def _set_session_cookie(self, response: Response, raw_id: str) -> None:
        response.set_cookie(
            self.cookies.session,
            raw_id,
            max_age=int(self.settings.sessions.absolute_timeout_seconds),
            path="/",
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )

    async def whoami(self, request: Request) -> Response:
        current = await self._current(request)
        if current is None:
            raise ProblemError(
                401,
                "authentication-required",
                "Sign in to continue.",
                headers={"WWW-Authenticate": 'Bearer realm="flows-bff"'},
            )
        session = current[1]
        principal = _principal(session)
        view = SessionView(
            user={"sub": session.sub, "name": session.name, "email": session.email},
            tenants=[
                {
                    "id": tenant,
                    "scopes": sorted(scopes),
                    "permissions": msgspec.to_builtins(permissions(principal, tenant)),
                }
                for tenant, scopes in sorted(principal.tenants.items())
            ],
            expires_at=_iso(self.sessions.expires_at(session)),
        )
        return Response(msgspec.json.encode(view), media_type="application/json")

    async def logout(self, request: Request) -> Response:
        raw_id = request.cookies.get(self.cookies.session)
        end_session_url = None
        if raw_id:
            check_csrf(request, self._allowed_origins)
            session = await self.sessions.get(raw_id)
            await self.sessions.delete(raw_id)
            if session is not None:
                if session.refresh_token:
                    await self.oidc.revoke(session.refresh_token)
                end_session_url = await self.oidc.end_session_url(
                    session.id_token, self.settings.bff.public_origin.rstrip("/") + "/"
                )
        response = Response(
            msgspec.json.encode({"endSessionUrl": end_session_url}),
            media_type="application/json",
        )
        response.delete_cookie(
            self.cookies.session,
            path="/",
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )
        return response

    async def backchannel_logout(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return _backchannel_error("send logout_token as application/x-www-form-urlencoded")
        # Parsed here rather than with request.form(), which needs python-multipart even for
        # urlencoded bodies; a logout token is small, so the body is bounded too.
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > _BACKCHANNEL_MAX_BYTES:
                return _backchannel_error("the request body is too large")
        try:
            fields = parse_qs(body.decode("ascii"), strict_parsing=True, max_num_fields=4)
        except (UnicodeDecodeError, ValueError):
            return _backchannel_error("the request body is not a valid form")
        values = fields.get("logout_token", [])
        token = values[0] if len(values) == 1 else None
        if not token:
            return _backchannel_error("logout_token is required")
        try:
            validator = await self._logout_tokens()
            logout = await validator.validate_logout_token(token)
        except InvalidToken as exc:
            logger.info("back-channel logout token rejected: %s", exc.reason)
            return _backchannel_error(f"invalid logout token ({exc.reason})")
        except (JWKSUnavailable, ProviderUnavailable) as exc:
            logger.warning("back-channel logout cannot validate tokens: %s", exc)
            return Response(status_code=503, headers={"Cache-Control": "no-store"})
        ended = 0
        if logout.sid:
            ended += await self.sessions.delete_by_sid(logout.sid)
        elif logout.sub:
            ended += await self.sessions.delete_by_sub(logout.sub)
        logger.info("back-channel logout ended %d session(s)", ended)
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    async def _logout_tokens(self) -> LogoutTokenValidator:
        if self._logout_validator is None:
            self._logout_validator = LogoutTokenValidator(
                issuer=self.oidc.issuer,
                audience=self.settings.oidc.client_id,
                jwks=await self.oidc.jwks(),
                replay_cache=self._replay_cache,
                clock=self._clock,
            )
        return self._logout_validator

    async def jwks(self, request: Request) -> Response:
        keys = self.minter.jwks() if self.minter else {"keys": []}
        return Response(
            msgspec.json.encode(keys),
            media_type="application/json",
            headers={"Cache-Control": "public, max-age=300"},
        )


def _endpoint(method: Callable[[Auth, Request], Awaitable[Response]]) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return await method(request.app.state.auth, request)

    return endpoint


routes = [
    Route("/auth/login", _endpoint(Auth.login), methods=["GET"]),
    Route("/auth/callback", _endpoint(Auth.callback), methods=["GET"]),
    Route("/auth/session", _endpoint(Auth.whoami), methods=["GET"]),
    Route("/auth/logout", _endpoint(Auth.logout), methods=["POST"]),
    Route("/auth/backchannel-logout", _endpoint(Auth.backchannel_logout), methods=["POST"]),
    Route("/.well-known/jwks.json", _endpoint(Auth.jwks), methods=["GET"]),
]


def _principal(session: Session) -> Principal:
    return Principal(
        subject=session.sub,
        tenants={tenant: frozenset(scopes) for tenant, scopes in session.tenants.items()},
        via="session",
        name=session.name,
        email=session.email,
        access_token=session.access_token,
    )


def _login_failed(detail: str) -> ProblemError:
    return ProblemError(400, "login-failed", detail)


def _backchannel_error(description: str) -> Response:
    return Response(
        msgspec.json.encode({"error": "invalid_request", "error_description": description}),
        status_code=400,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
