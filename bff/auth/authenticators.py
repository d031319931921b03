"""Who the caller is: the two authenticators of the API.

- :class:`BearerAuthenticator`: ``Authorization: Bearer <JWT>`` validated against the provider's
  key set; no CSRF header needed (nothing ambient is involved).
- :class:`SessionAuthenticator`: the HttpOnly session cookie, with the CSRF checks of
  :mod:`bff.auth.csrf`, and an inline token refresh before anything is forwarded, single-flight per
  session within the process and, through the refresh lock, across instances.

Each returns ``None`` when its kind of credential is absent, so the next one may try.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec
from starlette.requests import Request

from ..observability import Metrics
from ..problems import (
    ProblemError,
    authentication_required,
    session_expired,
    signin_unavailable,
)
from ..settings import Settings
from ..state.refresh_locks import RefreshLock
from ..state.sessions import Session, SessionStore, hash_session_id
from .cookies import Cookies
from .csrf import check_csrf
from .discovery import Discovery, ProviderUnavailable
from .dpop import DPoPKey
from .jwt_validation import InvalidToken, JWKSUnavailable
from .principal import Principal, tenants_from_claims
from .token_endpoint import RefreshRejected, TokenEndpoint

logger = logging.getLogger("bff.auth")

REFRESH_WAIT_SECONDS = 10.0
"""How long a call waits for another instance's refresh of the same session."""
REFRESH_POLL_SECONDS = 0.05
RELAY_SAFETY_SECONDS = 5.0
"""A relayed token this close to expiry is not sent: it could expire before the backend reads it."""


def session_principal(session: Session) -> Principal:
    return Principal(
        subject=session.sub,
        tenants={tenant: frozenset(scopes) for tenant, scopes in session.tenants.items()},
        via="session",
        name=session.name,
        email=session.email,
        access_token=session.access_token,
        dpop_key=DPoPKey.kept(session.dpop_key),
    )


class BearerAuthenticator:
    def __init__(self, settings: Settings, discovery: Discovery) -> None:
        self._discovery = discovery
        self._audience = settings.oidc.bearer_audience
        self._tenants_claim = settings.oidc.tenants_claim

    async def __call__(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() == "dpop":
            raise _bound_token_refused()
        if scheme.lower() != "bearer" or not token:
            raise authentication_required(
                "Use Authorization: Bearer <token>.", error="invalid_request"
            )
        if self._audience is None:
            raise authentication_required(
                "This gateway takes no bearer tokens ([oidc].bearer_audience is not set).",
                error="invalid_token",
            )
        try:
            validator = await self._discovery.token_validator(self._audience)
            claims = await validator.validate(token)
            if "nonce" in claims:
                # Our sign-in's ID tokens carry a nonce, access tokens never do: an ID token
                # must not outlive the session as a bearer credential.
                raise InvalidToken("id-token", "an ID token is not a bearer token")
            if "events" in claims:
                raise InvalidToken("logout-token", "a logout token is not a bearer token")
            if "cnf" in claims:
                logger.info("bearer token rejected: bound to a key (cnf)")
                raise _bound_token_refused()
        except InvalidToken as exc:
            logger.info("bearer token rejected: %s", exc.reason)
            raise authentication_required(
                "The bearer token is not valid.", error="invalid_token"
            ) from None
        except (JWKSUnavailable, ProviderUnavailable) as exc:
            logger.warning("cannot validate bearer tokens: %s", exc)
            raise signin_unavailable() from None
        return Principal(
            subject=claims["sub"],
            tenants=tenants_from_claims(claims, self._tenants_claim),
            via="bearer",
            name=claims.get("name"),
            email=claims.get("email"),
            access_token=token,
        )


def _bound_token_refused() -> ProblemError:
    """A sender-constrained token (DPoP, RFC 9449; or certificate-bound, RFC 8705) offered by
    an API caller. Accepting it as a bearer token would undo its binding, and relaying it would
    need a proof of the caller's key for each backend URL, which only the caller can make."""
    return authentication_required(
        "This gateway takes bearer tokens only: a token bound to a key (DPoP or a certificate) "
        "cannot be relayed on your behalf; ask the provider for an unbound token for this API.",
        error="invalid_token",
    )


class SessionAuthenticator:
    """The session cookie: CSRF-checked, and with an access token good for the refresh margin."""

    def __init__(
        self,
        settings: Settings,
        *,
        tokens: TokenEndpoint,
        sessions: SessionStore,
        refresh_lock: RefreshLock,
        cookies: Cookies,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cookies = cookies
        self._refreshes = metrics.token_refreshes
        self._tokens = tokens
        self._sessions = sessions
        self._refresh_lock = refresh_lock
        self._clock = clock
        self._allowed_origins = settings.allowed_origins
        self._margin = settings.oidc.refresh_margin_seconds
        self._relays_tokens = settings.upstream.credential == "relay"
        self._refreshing: dict[str, asyncio.Task[Session]] = {}

    async def __call__(self, request: Request) -> Principal | None:
        current = await self.current(request)
        return None if current is None else session_principal(current[1])

    def ended(self) -> ProblemError:
        """The 401 for a cookie whose session no longer exists; it also clears the cookie."""
        return session_expired(
            "Your session has ended; sign in again.", clear_cookie=self.cookies.session
        )

    async def current(self, request: Request) -> tuple[str, Session] | None:
        """The cookie's raw id and session, fresh; None without a cookie."""
        raw_id = request.cookies.get(self.cookies.session)
        if not raw_id:
            return None
        check_csrf(request, self._allowed_origins)
        session = await self._sessions.get(raw_id)
        if session is None:
            raise self.ended()
        return raw_id, await self._fresh(raw_id, session)

    async def _fresh(self, raw_id: str, session: Session) -> Session:
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
        """Within the margin of expiry: ``[oidc].refresh_margin_seconds``, or a fifth of the
        token's lifetime when that is less (a 60 s margin on a 60 s token would refresh always)."""
        expires = session.access_expires_at
        if expires is None:
            return False
        margin = self._margin
        if session.access_lifetime:
            margin = min(margin, session.access_lifetime / 5)
        return expires - margin <= self._clock()

    async def _refresh(self, raw_id: str, session: Session) -> Session:
        # Other instances sharing the session store must not refresh at the same time either.
        lock_key = hash_session_id(raw_id)
        deadline = time.monotonic() + REFRESH_WAIT_SECONDS
        while (held := await self._refresh_lock.acquire(lock_key)) is None:
            # Another instance is refreshing: wait until it stores the new tokens, or until it
            # lets go of the lock without them (provider down) and this one may try as it did.
            if time.monotonic() >= deadline:
                raise signin_unavailable()
            await asyncio.sleep(REFRESH_POLL_SECONDS)
            current = await self._sessions.get(raw_id, fresh=True)
            if current is None:
                raise self.ended()
            if not self._needs_refresh(current):
                return current
        try:
            # Another instance may have refreshed between our read and taking the lock.
            current = await self._sessions.get(raw_id, fresh=True)
            if current is None:
                raise self.ended()
            if not self._needs_refresh(current):
                return current
            return await self._refresh_holding_lock(raw_id, current)
        finally:
            await self._refresh_lock.release(lock_key, held)

    async def _refresh_holding_lock(self, raw_id: str, session: Session) -> Session:
        if not session.refresh_token:
            # Nothing to renew: a relayed token serves until it expires (as /auth/session says),
            # but not so close to it that it could expire on its way to the backend.
            left = (session.access_expires_at or 0.0) - self._clock()
            if self._relays_tokens and left <= RELAY_SAFETY_SECONDS:
                await self._sessions.delete(raw_id, ending="expired")
                raise session_expired(
                    "Your sign-in has expired.", clear_cookie=self.cookies.session
                )
            return session
        try:
            key = DPoPKey.kept(session.dpop_key)  # the refreshed tokens are bound to it too
            tokens = await self._tokens.refresh(session.refresh_token, key)
        except RefreshRejected:
            self._refreshes.labels("failed", "rejected").inc()
            await self._sessions.delete(raw_id, ending="refresh-refused")
            raise session_expired(
                "Your sign-in has expired; sign in again.", clear_cookie=self.cookies.session
            ) from None
        except ProviderUnavailable as exc:
            self._refreshes.labels("failed", "unavailable").inc()
            logger.warning("token refresh failed: %s", exc)
            expires = session.access_expires_at
            if expires is not None and expires > self._clock():
                return session  # still valid for a little while: try again next call
            if not self._relays_tokens:
                # The upstream credential is minted here: the session, still within its own
                # timeouts, serves on; the next call tries the provider again.
                return session
            raise signin_unavailable() from None
        session = msgspec.structs.replace(
            session,
            access_token=tokens.access_token or session.access_token,
            refresh_token=tokens.refresh_token,
            id_token=tokens.id_token or session.id_token,
            access_expires_at=tokens.expires_at,
            access_lifetime=tokens.lifetime,
        )
        self._refreshes.labels("succeeded", "").inc()
        if not await self._sessions.save(raw_id, session):
            raise self.ended()
        return session
