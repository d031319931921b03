"""Signing dashboard users in and out: the ``/auth/…`` routes.

Under :data:`bff.paths.API_PREFIX`: ``GET /auth/login`` → the provider (authorization code, PKCE,
nonce); ``GET /auth/callback`` → a fresh server-side session and an HttpOnly cookie;
``GET /auth/session`` (who am I); ``POST /auth/logout``; ``GET /auth/sessions`` (the user's
sessions on every device) and ``DELETE /auth/sessions[/{sessionId}]`` (end one, or all of them:
"sign out everywhere"); ``POST /auth/backchannel-logout`` (OpenID Connect Back-Channel
Logout 1.0); ``GET /.well-known/jwks.json`` (the public keys of the upstream tokens this gateway
mints).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .audit import Actor, AuditEvent, AuditLog, AuditUnavailable, Outcome, new_audit_id
from .authenticators import (
    RELAY_SAFETY_SECONDS,
    SessionAuthenticator,
    session_principal,
    tenants_from_claims,
)
from .context import client_ip, request_facts
from .csrf import check_csrf
from .jwt_validation import InvalidToken, JWKSUnavailable, LogoutTokenValidator
from .observability import Metrics
from .oidc import LoginError, OIDCClient, ProviderUnavailable, TokenSet, UserinfoRefused
from .paths import CALLBACK_PATH, LOGIN_PATH, LOGOUT_PATH, SESSIONS_PATH
from .principal import permissions
from .problems import (
    FieldError,
    ProblemError,
    authentication_required,
    signin_unavailable,
    validation_error,
)
from .return_to import safe_return_to
from .settings import Settings
from .state.logins import LOGIN_TTL, LoginStore
from .state.replay import ReplayCache
from .state.sessions import Session, SessionStore
from .upstream_tokens import UpstreamTokenMinter
from .user_agents import describe, kept

logger = logging.getLogger("bff.auth")

_OAUTH_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_BACKCHANNEL_MAX_BYTES = 32 * 1024


class SessionView(msgspec.Struct, rename="camel"):
    user: dict[str, str | None]
    tenants: list[dict[str, Any]]
    expires_at: str
    auth_time: str | None
    acr: str | None
    refreshable: bool
    session_id: str
    sign_out_url: str
    sessions_url: str


class SessionSummary(msgspec.Struct, rename="camel"):
    """One of the user's sessions, as ``GET /auth/sessions`` lists them."""

    id: str
    current: bool
    device: str
    user_agent: str | None
    created_at: str
    last_seen_at: str
    expires_at: str


_LOGIN_OPTIONS = (
    (
        "prompt",
        re.compile(r"none|login|consent|select_account"),
        "Use none, login, consent or select_account.",
    ),
    ("max_age", re.compile(r"[0-9]{1,9}"), "Use a number of seconds."),
    ("login_hint", re.compile(r"[!-~]{1,256}", re.ASCII), "Use 1 to 256 visible characters."),
    (
        "acr_values",
        re.compile(r"[A-Za-z0-9:._/-]{1,128}( [A-Za-z0-9:._/-]{1,128}){0,7}"),
        "Use up to 8 space-separated values.",
    ),
)
_LOGIN_PARAMETERS = frozenset({"returnTo", *(name for name, _, _ in _LOGIN_OPTIONS)})
# OpenID Connect Core 3.1.2.6: a prompt=none request that would need the user to act.
_NEEDS_THE_USER = frozenset(
    {"login_required", "consent_required", "interaction_required", "account_selection_required"}
)


def _time(value: object) -> float | None:
    """A NumericDate claim (seconds since the epoch), or None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class SignIn:
    """The sign-in routes of one app, and what they share: the provider, the stores, cookies."""

    def __init__(
        self,
        settings: Settings,
        *,
        oidc: OIDCClient,
        sessions: SessionStore,
        logins: LoginStore,
        session_auth: SessionAuthenticator,
        replay_cache: ReplayCache | None = None,
        minter: UpstreamTokenMinter | None = None,
        audit: AuditLog | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.metrics = metrics or Metrics()
        self.oidc = oidc
        self.sessions = sessions
        self.logins = logins
        self.session_auth = session_auth
        self.cookies = session_auth.cookies
        self.minter = minter
        self._replay_cache = replay_cache
        self._clock = clock
        self._logout_validator: LogoutTokenValidator | None = None
        self._allowed_origins = settings.allowed_origins
        self._redirect_uri = settings.bff.public_origin.rstrip("/") + CALLBACK_PATH

    async def login(self, request: Request) -> Response:
        """Start a sign-in: ``returnTo`` (a path of ours), and the sign-in options a dashboard
        needs: ``prompt`` (none, login, consent, select_account), ``max_age`` (seconds),
        ``login_hint`` and ``acr_values`` (for a step-up before a sensitive action)."""
        errors = [
            FieldError(k, "Unknown query parameter.", "unknown_parameter")
            for k in request.query_params
            if k not in _LOGIN_PARAMETERS
        ]
        options: dict[str, str] = {}
        for name, pattern, message in _LOGIN_OPTIONS:
            value = request.query_params.get(name)
            if value is None:
                continue
            if not pattern.fullmatch(value):
                errors.append(FieldError(name, message, "invalid"))
            options[name] = value
        if errors:
            raise validation_error(errors)
        return_to = safe_return_to(request.query_params.get("returnTo"))
        try:
            url, login = await self.oidc.start_login(self._redirect_uri, return_to, options)
        except ProviderUnavailable as exc:
            logger.error("cannot start sign-in: %s", exc)
            raise signin_unavailable() from None
        handle = secrets.token_urlsafe(32)
        client = client_ip(request.scope, self.settings.bff.trusted_proxies) or "unknown"
        if not await self.logins.put(handle, login, client):
            self.metrics.sign_ins.labels("refused", "rate-limited").inc()
            raise ProblemError(
                429,
                "rate-limited",
                "Too many sign-ins were started from here; try again in a few minutes.",
                headers={"Retry-After": str(int(LOGIN_TTL // 10))},
            )
        self.metrics.sign_ins.labels("started", "").inc()
        response = RedirectResponse(url, status_code=302)
        # Lax, not Strict: the provider's redirect back to the callback is a cross-site
        # top-level navigation, and it must carry this cookie.
        response.set_cookie(
            self.cookies.login,
            handle,
            max_age=int(LOGIN_TTL),
            path="/",
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        return response

    async def callback(self, request: Request) -> Response:
        try:
            response, signed_in = await self._callback(request)
        except ProblemError as problem:
            self.metrics.sign_ins.labels("failed", problem.slug).inc()
            await self._audit(request, "session.sign_in", "failed", problem.status, problem.slug)
            raise
        if signed_in is None:
            return response  # a silent sign-in that needs the user: it starts again, in view
        sub, session_id = signed_in
        self.metrics.sign_ins.labels("succeeded", "").inc()
        await self._audit(
            request, "session.sign_in", "succeeded", response.status_code, sub=sub,
            session_id=session_id,
        )  # fmt: skip
        return response

    async def _callback(self, request: Request) -> tuple[Response, tuple[str, str | None] | None]:
        """The response, and who signed in with which session (None: nobody, yet)."""
        handle = request.cookies.get(self.cookies.login)
        login = await self.logins.take(handle) if handle else None
        if login is None:
            raise _login_failed("This sign-in has expired or was already used; start again.")
        state = request.query_params.get("state", "")
        state_matches = secrets.compare_digest(state.encode(), login.state.encode())
        if not state_matches:
            # Errors too (RFC 6749 4.1.2.1 echoes state): an answer to another request is no answer.
            raise _login_failed("The sign-in response does not match this browser's request.")
        if login.silent and request.query_params.get("error") in _NEEDS_THE_USER:
            # A silent sign-in (prompt=none) that needs the user: ask them, as a sign-in does.
            return (
                RedirectResponse(
                    f"{LOGIN_PATH}?{urlencode({'returnTo': login.return_to})}", status_code=302
                ),
                None,
            )
        if "error" in request.query_params:
            # Only a well-formed OAuth error code is repeated back, never arbitrary text.
            code = request.query_params["error"]
            reason = f" ({code})" if _OAUTH_ERROR_CODE.fullmatch(code) else ""
            raise _login_failed(f"The identity provider refused the sign-in{reason}.")
        code = request.query_params.get("code", "")
        if not code:
            raise _login_failed("The sign-in response does not match this browser's request.")
        try:
            await self.oidc.check_response_issuer(request.query_params.get("iss"))
            tokens, claims = await self.oidc.finish_login(login, code, self._redirect_uri)
            if self.settings.oidc.tenants_claim not in claims and tokens.access_token:
                userinfo = await self.oidc.userinfo(tokens.access_token)
                # OpenID Connect Core 5.3.2: an answer about another subject must not be used.
                if userinfo.get("sub") == claims["sub"]:
                    claims = {**userinfo, **claims}
        except UserinfoRefused as exc:
            logger.warning("sign-in failed: %s", exc)
            raise _login_failed(
                "The identity provider would not say who you are (its userinfo endpoint "
                "refused the sign-in); start again, or ask an administrator to check the client."
            ) from None
        except LoginError as exc:
            logger.warning("sign-in failed: %s", exc)
            raise _login_failed("The sign-in could not be completed; start again.") from None
        except ProviderUnavailable as exc:
            logger.error("sign-in failed, provider unavailable: %s", exc)
            raise signin_unavailable() from None
        claim = self.settings.oidc.tenants_claim
        if claim not in claims:
            logger.warning(
                "sign-in of %r: neither the ID token nor userinfo has the tenants claim %r "
                "([oidc].tenants_claim); the user can see no tenant",
                claims.get("sub"),
                claim,
            )
        # A fresh id for every sign-in: an id planted before it (fixation) is worthless.
        previous = request.cookies.get(self.cookies.session)
        if previous:
            await self.sessions.delete(previous)
        session = self._new_session(tokens, claims)
        session.user_agent = kept(request.headers.get("user-agent"))
        raw_id = await self.sessions.create(session)
        response = RedirectResponse(login.return_to, status_code=302)
        response.set_cookie(
            self.cookies.session,
            raw_id,
            max_age=int(self.settings.sessions.absolute_timeout_seconds),
            path="/",
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(
            self.cookies.login, path="/", secure=self.settings.secure_cookies, httponly=True
        )
        return response, (session.sub, self.sessions.handle(raw_id))

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
            access_lifetime=tokens.lifetime,
            sid=claims.get("sid") if isinstance(claims.get("sid"), str) else None,
            auth_time=_time(claims.get("auth_time")),
            acr=claims.get("acr") if isinstance(claims.get("acr"), str) else None,
        )

    async def whoami(self, request: Request) -> Response:
        raw_id, session = await self._signed_in(request)
        principal = session_principal(session)
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
            expires_at=_iso(self._ends_at(session)),
            auth_time=_iso(session.auth_time or session.created_at),
            acr=session.acr,
            refreshable=session.refresh_token is not None,
            session_id=self.sessions.handle(raw_id) or "",
            sign_out_url=LOGOUT_PATH,
            sessions_url=SESSIONS_PATH,
        )
        return Response(msgspec.json.encode(view), media_type="application/json")

    async def list_sessions(self, request: Request) -> Response:
        """The signed-in user's sessions on every device, the most recently used first."""
        raw_id, session = await self._signed_in(request)
        mine = self.sessions.handle(raw_id)
        listed = [
            SessionSummary(
                id=handle,
                current=handle == mine,
                device=describe(other.user_agent),
                user_agent=other.user_agent,
                created_at=_iso(other.created_at),
                last_seen_at=_iso(other.last_seen_at),
                expires_at=_iso(self._ends_at(other)),
            )
            for handle, other in await self.sessions.sessions_of(session.sub)
        ]
        return Response(
            msgspec.json.encode({"sessions": listed}),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def revoke_session(self, request: Request) -> Response:
        """End one of the user's sessions, on whatever device it is; 404 unless it is theirs."""
        raw_id, session = await self._signed_in(request)
        handle = request.path_params["sessionId"]
        ended = await self.sessions.delete_handle(session.sub, handle)
        if ended is None:
            raise ProblemError(404, "not-found", "You have no session with this id.")
        await self._ended_by_user([(handle, ended)], request, 204)
        response = Response(status_code=204)
        if handle == self.sessions.handle(raw_id):
            self._clear_session_cookie(response)
        return response

    async def revoke_all_sessions(self, request: Request) -> Response:
        """Sign out everywhere: every session of the user ends, this one included."""
        _, session = await self._signed_in(request)
        ended = await self.sessions.sessions_of(session.sub)
        await self.sessions.delete_by_sub(session.sub)
        await self._ended_by_user(ended, request, 200)
        response = Response(
            msgspec.json.encode({"revoked": len(ended)}), media_type="application/json"
        )
        self._clear_session_cookie(response)
        return response

    async def _signed_in(self, request: Request) -> tuple[str, Session]:
        current = await self.session_auth.current(request)
        if current is None:
            raise authentication_required()
        return current

    async def _ended_by_user(
        self, ended: list[tuple[str, Session]], request: Request, status: int
    ) -> None:
        """After the user revoked sessions: each audited, counted, its refresh token revoked."""
        self.metrics.sign_outs.labels("revoked").inc(len(ended))
        for handle, session in ended:
            await self._audit(
                request, "session.revoke", "succeeded", status, sub=session.sub,
                session_id=handle,
            )  # fmt: skip
            if session.refresh_token:
                await self.oidc.revoke(session.refresh_token)

    def _ends_at(self, session: Session) -> float:
        """When this session stops working, honestly: relaying the user's token without a
        refresh token, it ends with that token, whatever the session store would allow."""
        ends = self.sessions.expires_at(session)
        relays = self.settings.upstream.credential == "relay"
        if relays and session.refresh_token is None and session.access_expires_at is not None:
            ends = min(ends, session.access_expires_at - RELAY_SAFETY_SECONDS)
        return ends

    async def logout(self, request: Request) -> Response:
        raw_id = request.cookies.get(self.cookies.session)
        end_session_url = None
        if raw_id:
            check_csrf(request, self._allowed_origins)
            session = await self.sessions.get(raw_id)
            await self.sessions.delete(raw_id)
            if session is not None:
                self.metrics.sign_outs.labels("user").inc()
                await self._audit(
                    request, "session.sign_out", "succeeded", 200, sub=session.sub,
                    session_id=self.sessions.handle(raw_id),
                )  # fmt: skip
                if session.refresh_token:
                    await self.oidc.revoke(session.refresh_token)
                oidc = self.settings.oidc
                end_session_url = await self.oidc.end_session_url(
                    oidc.post_logout_redirect or self.settings.bff.public_origin.rstrip("/") + "/",
                    id_token_hint=session.id_token if oidc.end_session_id_token_hint else None,
                    logout_hint={"sub": session.sub, "sid": session.sid}.get(
                        oidc.end_session_logout_hint
                    ),
                )
        response = Response(
            msgspec.json.encode({"endSessionUrl": end_session_url}),
            media_type="application/json",
        )
        self._clear_session_cookie(response)
        return response

    def _clear_session_cookie(self, response: Response) -> None:
        response.delete_cookie(
            self.cookies.session,
            path="/",
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )

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
        self.metrics.sign_outs.labels("backchannel").inc(ended)
        await self._audit(request, "session.backchannel_logout", "succeeded", 200, sub=logout.sub)
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    async def _audit(
        self,
        request: Request,
        event: str,
        outcome: Outcome,
        status: int,
        reason: str | None = None,
        *,
        sub: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """Record a sign-in event; these are not write-ahead, so a failure is only logged."""
        if self.audit is None:
            return
        record = AuditEvent(
            event=event,
            outcome=outcome,
            audit_id=new_audit_id(),
            actor=Actor(iss=self.oidc.issuer, sub=sub, auth="session"),
            status=status,
            reason=reason,
            session_id=session_id,
            **request_facts(request.scope, self.settings.bff.trusted_proxies),
        )
        try:
            await self.audit.record(record)
        except AuditUnavailable as exc:
            logger.error("cannot record %s: %s", event, exc)

    async def _logout_tokens(self) -> LogoutTokenValidator:
        if self._logout_validator is None:
            self._logout_validator = LogoutTokenValidator(
                issuer=(await self.oidc.metadata()).issuer,
                audience=self.settings.oidc.client_id,
                algorithms=await self.oidc.id_token_algorithms(),
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


def _endpoint(
    method: Callable[[SignIn, Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await method(request.app.state.signin, request)

    return endpoint


def _login_failed(detail: str) -> ProblemError:
    return ProblemError(400, "login-failed", detail)


def _backchannel_error(description: str) -> Response:
    return Response(
        msgspec.json.encode({"error": "invalid_request", "error_description": description}),
        status_code=400,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


routes = [
    Route("/auth/login", _endpoint(SignIn.login), methods=["GET"]),
    Route("/auth/callback", _endpoint(SignIn.callback), methods=["GET"]),
    Route("/auth/session", _endpoint(SignIn.whoami), methods=["GET"]),
    Route("/auth/logout", _endpoint(SignIn.logout), methods=["POST"]),
    Route("/auth/sessions", _endpoint(SignIn.list_sessions), methods=["GET"]),
    Route("/auth/sessions", _endpoint(SignIn.revoke_all_sessions), methods=["DELETE"]),
    Route("/auth/sessions/{sessionId}", _endpoint(SignIn.revoke_session), methods=["DELETE"]),
    Route("/auth/backchannel-logout", _endpoint(SignIn.backchannel_logout), methods=["POST"]),
    Route("/.well-known/jwks.json", _endpoint(SignIn.jwks), methods=["GET"]),
]
