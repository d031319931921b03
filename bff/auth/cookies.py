"""The gateway's two cookies: the session's and the pending sign-in's.

Both are HttpOnly and, over https, ``Secure`` with the ``__Host-`` prefix (pinned to this exact
origin: ``Path=/``, no ``Domain``); browsers accept that prefix only over https, so loopback
development uses plain names. The session cookie is ``SameSite=Strict``; the sign-in cookie is
``Lax``, because the provider's redirect back to the callback is a cross-site top-level
navigation, and it must carry this cookie.
"""

from __future__ import annotations

from starlette.responses import Response

from ..settings import Settings
from ..state.logins import LOGIN_TTL


class Cookies:
    """Names, and setting and clearing them on a response."""

    def __init__(self, settings: Settings) -> None:
        self.secure = settings.secure_cookies
        prefix = "__Host-" if self.secure else ""
        self.session = f"{prefix}bff_session"
        self.login = f"{prefix}bff_login"
        self._session_max_age = int(settings.sessions.absolute_timeout_seconds)

    def start_login(self, response: Response, handle: str) -> None:
        response.set_cookie(
            self.login,
            handle,
            max_age=int(LOGIN_TTL),
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )

    def start_session(self, response: Response, raw_id: str) -> None:
        """The new session's cookie; the pending sign-in's is done with."""
        response.set_cookie(
            self.session,
            raw_id,
            max_age=self._session_max_age,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(self.login, path="/", secure=self.secure, httponly=True)

    def end_session(self, response: Response) -> None:
        response.delete_cookie(
            self.session, path="/", secure=self.secure, httponly=True, samesite="strict"
        )
