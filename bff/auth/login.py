"""Signing in: ``GET /auth/login`` sends the browser to the provider (authorization code, PKCE,
nonce); ``GET /auth/callback`` takes its answer, makes a fresh server-side session and sets the
HttpOnly cookie, back to where the user was.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any, Literal
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..audit import Auditor
from ..context import client_ip
from ..observability import Metrics
from ..paths import CALLBACK_PATH, LOGIN_PATH
from ..problems import FieldError, ProblemError, signin_unavailable, validation_error
from ..settings import Settings
from ..state.logins import LOGIN_TTL, LoginRequest, LoginStore
from ..state.sessions import Session, SessionStore
from .cookies import Cookies
from .discovery import ProviderUnavailable
from .dpop import DPoPKey
from .oidc import OIDCClient
from .principal import tenants_from_claims
from .return_to import safe_return_to
from .token_endpoint import LoginError, ParRefused, TokenSet, UserinfoRefused
from .user_agents import kept

logger = logging.getLogger("bff.auth")

_OAUTH_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
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


class Login:
    """The two sign-in routes, over the provider, the pending sign-ins and the sessions."""

    def __init__(
        self,
        settings: Settings,
        *,
        oidc: OIDCClient,
        logins: LoginStore,
        sessions: SessionStore,
        cookies: Cookies,
        audit: Auditor,
        metrics: Metrics,
    ) -> None:
        self._oidc = oidc
        self._logins = logins
        self._sessions = sessions
        self._cookies = cookies
        self._audit = audit
        self._sign_ins = metrics.sign_ins
        self._tenants_claim = settings.oidc.tenants_claim
        self._trusted_proxies = settings.bff.trusted_proxies
        self._redirect_uri = settings.bff.public_origin.rstrip("/") + CALLBACK_PATH

    async def start(self, request: Request) -> Response:
        """Start a sign-in: ``returnTo`` (a path of ours), and the sign-in options a dashboard
        needs: ``prompt`` (none, login, consent, select_account), ``max_age`` (seconds),
        ``login_hint`` and ``acr_values`` (for a step-up before a sensitive action)."""
        options = _login_options(request)
        return_to = safe_return_to(request.query_params.get("returnTo"))
        try:
            url, login = await self._oidc.start_login(self._redirect_uri, return_to, options)
        except ProviderUnavailable as exc:
            logger.error("cannot start sign-in: %s", exc)
            raise signin_unavailable() from None
        except ParRefused as exc:
            logger.warning("sign-in refused at its start: %s", exc)
            raise _login_failed(
                f"The identity provider refused the sign-in request ({exc})."
            ) from None
        handle = secrets.token_urlsafe(32)
        client = client_ip(request.scope, self._trusted_proxies) or "unknown"
        if not await self._logins.put(handle, login, client):
            self._sign_ins.labels("refused", "rate-limited").inc()
            raise ProblemError(
                429,
                "rate-limited",
                "Too many sign-ins were started from here; try again in a few minutes.",
                headers={"Retry-After": str(int(LOGIN_TTL // 10))},
            )
        self._sign_ins.labels("started", "").inc()
        response = RedirectResponse(url, status_code=302)
        self._cookies.start_login(response, handle)
        return response

    async def callback(self, request: Request) -> Response:
        try:
            response, signed_in = await self._callback(request)
        except ProblemError as problem:
            self._sign_ins.labels("failed", problem.slug).inc()
            await self._record(request, "failed", problem.status, reason=problem.slug)
            raise
        if signed_in is None:
            return response  # a silent sign-in that needs the user: it starts again, in view
        sub, session_id = signed_in
        self._sign_ins.labels("succeeded", "").inc()
        await self._record(
            request, "succeeded", response.status_code, sub=sub, session_id=session_id
        )
        return response

    async def _callback(self, request: Request) -> tuple[Response, tuple[str, str | None] | None]:
        """The response, and who signed in with which session (None: nobody, yet)."""
        handle = request.cookies.get(self._cookies.login)
        login = await self._logins.take(handle) if handle else None
        if login is None:
            raise _login_failed("This sign-in has expired or was already used; start again.")
        code = _authorization_code(request, login)
        if code is None:
            # A silent sign-in (prompt=none) that needs the user: ask them, as a sign-in does.
            again = f"{LOGIN_PATH}?{urlencode({'returnTo': login.return_to})}"
            return RedirectResponse(again, status_code=302), None
        tokens, claims = await self._tokens_and_claims(request, login, code)
        # A fresh id for every sign-in: an id planted before it (fixation) is worthless.
        previous = request.cookies.get(self._cookies.session)
        if previous:
            await self._sessions.delete(previous, ending="signed-in-again")
        session = self._new_session(tokens, claims, login.dpop_key)
        session.user_agent = kept(request.headers.get("user-agent"))
        raw_id = await self._sessions.create(session)
        response = RedirectResponse(login.return_to, status_code=302)
        self._cookies.start_session(response, raw_id)
        return response, (session.sub, self._sessions.handle(raw_id))

    async def _tokens_and_claims(
        self, request: Request, login: LoginRequest, code: str
    ) -> tuple[TokenSet, dict[str, Any]]:
        """The code exchanged, the ID token checked, and the claims (with userinfo's, when the
        ID token lacks the tenants claim)."""
        try:
            await self._oidc.check_response_issuer(request.query_params.get("iss"))
            tokens, claims = await self._oidc.finish_login(login, code, self._redirect_uri)
            if self._tenants_claim not in claims and tokens.access_token:
                bound_to = DPoPKey.kept(login.dpop_key)
                userinfo = await self._oidc.tokens.userinfo(tokens.access_token, bound_to)
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
        if self._tenants_claim not in claims:
            logger.warning(
                "sign-in of %r: neither the ID token nor userinfo has the tenants claim %r "
                "([oidc].tenants_claim); the user can see no tenant",
                claims.get("sub"),
                self._tenants_claim,
            )
        return tokens, claims

    def _new_session(
        self, tokens: TokenSet, claims: dict[str, Any], dpop_key: str | None
    ) -> Session:
        tenants = tenants_from_claims(claims, self._tenants_claim)
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
            dpop_key=dpop_key,
            sid=claims.get("sid") if isinstance(claims.get("sid"), str) else None,
            auth_time=_time(claims.get("auth_time")),
            acr=claims.get("acr") if isinstance(claims.get("acr"), str) else None,
        )

    async def _record(
        self,
        request: Request,
        outcome: Literal["succeeded", "failed"],
        status: int,
        *,
        reason: str | None = None,
        sub: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """A sign-in event; not write-ahead (the sign-in happened), so a failure is only logged."""
        audit, event = self._audit, "session.sign_in"
        record = audit.event(
            request.scope,
            event,
            outcome,
            actor=audit.session_actor(sub),
            status=status,
            reason=reason,
            session_id=session_id,
        )
        await audit.record_after(record, event)


def _login_options(request: Request) -> dict[str, str]:
    """The sign-in options of ``/auth/login``'s query; 400 for anything unknown or malformed."""
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
    return options


def _authorization_code(request: Request, login: LoginRequest) -> str | None:
    """The code of the provider's answer to ``login``; None when a silent sign-in needs the
    user; 400 ``login-failed`` for an answer to another request, or a refusal."""
    params = request.query_params
    state_matches = secrets.compare_digest(params.get("state", "").encode(), login.state.encode())
    if not state_matches:
        # Errors too (RFC 6749 4.1.2.1 echoes state): an answer to another request is no answer.
        raise _login_failed("The sign-in response does not match this browser's request.")
    if login.silent and params.get("error") in _NEEDS_THE_USER:
        return None
    if "error" in params:
        # Only a well-formed OAuth error code is repeated back, never arbitrary text.
        code = params["error"]
        reason = f" ({code})" if _OAUTH_ERROR_CODE.fullmatch(code) else ""
        raise _login_failed(f"The identity provider refused the sign-in{reason}.")
    code = params.get("code", "")
    if not code:
        raise _login_failed("The sign-in response does not match this browser's request.")
    return code


def _time(value: object) -> float | None:
    """A NumericDate claim (seconds since the epoch), or None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _login_failed(detail: str) -> ProblemError:
    return ProblemError(400, "login-failed", detail)
