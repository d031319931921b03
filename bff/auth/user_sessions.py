"""The signed-in user's sessions: ``GET /auth/session`` (who am I), ``GET /auth/sessions`` (their
sessions on every device), ``DELETE /auth/sessions/{sessionId}`` (end one) and
``DELETE /auth/sessions`` (end them all: "sign out everywhere").

The answers here are the sign-in's own view models (camelCase, like every answer to the
dashboard); the flows' are in :mod:`bff.views`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..http import rfc3339
from ..paths import LOGOUT_PATH, SESSIONS_PATH
from ..problems import ProblemError, authentication_required
from ..settings import Settings
from ..state.sessions import Session, SessionStore
from .authenticators import RELAY_SAFETY_SECONDS, SessionAuthenticator, session_principal
from .cookies import Cookies
from .principal import permissions
from .sign_outs import SignOuts
from .user_agents import describe


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


class UserSessions:
    def __init__(
        self,
        settings: Settings,
        *,
        session_auth: SessionAuthenticator,
        store: SessionStore,
        cookies: Cookies,
        sign_outs: SignOuts,
    ) -> None:
        self._session_auth = session_auth
        self.store = store
        self._cookies = cookies
        self._sign_outs = sign_outs
        self._relays = settings.upstream.credential == "relay"

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
            expires_at=_iso(self.ends_at(session)),
            auth_time=_iso(session.auth_time or session.created_at),
            acr=session.acr,
            refreshable=session.refresh_token is not None,
            session_id=self.store.handle(raw_id) or "",
            sign_out_url=LOGOUT_PATH,
            sessions_url=SESSIONS_PATH,
        )
        return Response(msgspec.json.encode(view), media_type="application/json")

    async def list(self, request: Request) -> Response:
        """The signed-in user's sessions on every device, the most recently used first."""
        raw_id, session = await self._signed_in(request)
        mine = self.store.handle(raw_id)
        listed = [
            SessionSummary(
                id=handle,
                current=handle == mine,
                device=describe(other.user_agent),
                user_agent=other.user_agent,
                created_at=_iso(other.created_at),
                last_seen_at=_iso(other.last_seen_at),
                expires_at=_iso(self.ends_at(other)),
            )
            for handle, other in await self.store.sessions_of(session.sub)
        ]
        return Response(
            msgspec.json.encode({"sessions": listed}),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def end_one(self, request: Request) -> Response:
        """End one of the user's sessions, on whatever device it is; 404 unless it is theirs."""
        raw_id, session = await self._signed_in(request)
        handle = request.path_params["sessionId"]
        ended = await self.store.delete_handle(session.sub, handle, ending="revoked")
        if ended is None:
            raise ProblemError(404, "not-found", "You have no session with this id.")
        await self._sign_outs.ended(
            request, "revoked", [(handle, ended)], event="session.revoke", status=204
        )
        response = Response(status_code=204)
        if handle == self.store.handle(raw_id):
            self._cookies.end_session(response)
        return response

    async def end_all(self, request: Request) -> Response:
        """Sign out everywhere: every session of the user ends, this one included."""
        _, session = await self._signed_in(request)
        ended = await self.store.sessions_of(session.sub)
        await self.store.delete_by_sub(session.sub, ending="signed-out-everywhere")
        await self._sign_outs.ended(request, "revoked", ended, event="session.revoke", status=200)
        response = Response(
            msgspec.json.encode({"revoked": len(ended)}), media_type="application/json"
        )
        self._cookies.end_session(response)
        return response

    async def _signed_in(self, request: Request) -> tuple[str, Session]:
        current = await self._session_auth.current(request)
        if current is None:
            raise authentication_required()
        return current

    def ends_at(self, session: Session) -> float:
        """When this session stops working, honestly: relaying the user's token without a
        refresh token, it ends with that token, whatever the session store would allow."""
        ends = self.store.expires_at(session)
        if self._relays and session.refresh_token is None and session.access_expires_at is not None:
            ends = min(ends, session.access_expires_at - RELAY_SAFETY_SECONDS)
        return ends


def _iso(epoch: float) -> str:
    return rfc3339(epoch, millis=False)
