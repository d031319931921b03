"""The ``/auth/…`` routes, and :class:`SignIn`, which holds the service behind each.

One service per job, each given exactly what it uses when the app opens
(:func:`open_sign_in`): :class:`~bff.auth.login.Login`,
:class:`~bff.auth.user_sessions.UserSessions`, :class:`~bff.auth.logout.Logout`,
:class:`~bff.auth.backchannel.BackchannelLogout`, and the session's live events,
:class:`~bff.auth.session_events.SessionEvents`. How sessions end is theirs in common:
:class:`~bff.auth.sign_outs.SignOuts`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..audit import Auditor
from ..http import Handler
from ..observability import Metrics
from ..settings import Settings
from ..state import Stores
from .authenticators import SessionAuthenticator
from .backchannel import BackchannelLogout
from .cookies import Cookies
from .login import Login
from .logout import Logout
from .oidc import OIDCClient
from .session_events import SessionEvents
from .sign_outs import SignOuts
from .user_sessions import UserSessions


@dataclass(frozen=True)
class SignIn:
    """The sign-in side of one app: its provider, its services, and the session authenticator
    that the API's calls share with them."""

    oidc: OIDCClient
    session_auth: SessionAuthenticator
    login: Login
    sessions: UserSessions
    logout: Logout
    backchannel: BackchannelLogout
    events: SessionEvents

    async def client_jwks(self, request: Request) -> Response:
        """The keys a provider fetches to check this client's ``private_key_jwt`` assertions."""
        return Response(
            msgspec.json.encode(self.oidc.client_jwks()),
            media_type="application/json",
            headers={"Cache-Control": "public, max-age=300"},
        )


def open_sign_in(
    settings: Settings,
    *,
    oidc: OIDCClient,
    stores: Stores,
    audit: Auditor,
    metrics: Metrics,
    clock: Callable[[], float] = time.time,
) -> SignIn:
    cookies = Cookies(settings)
    session_auth = SessionAuthenticator(
        settings,
        tokens=oidc.tokens,
        sessions=stores.sessions,
        refresh_lock=stores.refresh_lock,
        cookies=cookies,
        metrics=metrics,
        clock=clock,
    )
    sign_outs = SignOuts(tokens=oidc.tokens, audit=audit, metrics=metrics)
    sessions = UserSessions(
        settings,
        session_auth=session_auth,
        store=stores.sessions,
        cookies=cookies,
        sign_outs=sign_outs,
    )
    events = SessionEvents(
        settings,
        session_auth=session_auth,
        store=stores.sessions,
        ends_at=sessions.ends_at,
        clock=clock,
    )
    stores.invalidation.watch(events)
    return SignIn(
        oidc=oidc,
        session_auth=session_auth,
        login=Login(
            settings,
            oidc=oidc,
            logins=stores.logins,
            sessions=stores.sessions,
            cookies=cookies,
            audit=audit,
            metrics=metrics,
        ),
        sessions=sessions,
        logout=Logout(
            settings, oidc=oidc, store=stores.sessions, cookies=cookies, sign_outs=sign_outs
        ),
        backchannel=BackchannelLogout(
            client_id=settings.oidc.client_id,
            discovery=oidc.discovery,
            store=stores.sessions,
            replay_cache=stores.replay_cache,
            sign_outs=sign_outs,
            clock=clock,
        ),
        events=events,
    )


def _on(pick: Callable[[SignIn], Handler]) -> Handler:
    """An endpoint calling the service that ``pick`` names on the app's :class:`SignIn`."""

    async def endpoint(request: Request) -> Response:
        return await pick(request.app.state.signin)(request)

    return endpoint


routes = [
    Route("/auth/login", _on(lambda s: s.login.start), methods=["GET"]),
    Route("/auth/callback", _on(lambda s: s.login.callback), methods=["GET"]),
    Route("/auth/session", _on(lambda s: s.sessions.whoami), methods=["GET"]),
    Route("/auth/session/events", _on(lambda s: s.events.stream), methods=["GET"]),
    Route("/auth/logout", _on(lambda s: s.logout.logout), methods=["POST"]),
    Route("/auth/sessions", _on(lambda s: s.sessions.list), methods=["GET"]),
    Route("/auth/sessions", _on(lambda s: s.sessions.end_all), methods=["DELETE"]),
    Route("/auth/sessions/{sessionId}", _on(lambda s: s.sessions.end_one), methods=["DELETE"]),
    Route("/auth/backchannel-logout", _on(lambda s: s.backchannel.logout), methods=["POST"]),
    Route("/.well-known/client-jwks.json", _on(lambda s: s.client_jwks), methods=["GET"]),
]
