"""Signing out: ``POST /auth/logout`` ends this browser's session here and answers with the
provider's end-session URL (RP-Initiated Logout), for the dashboard to send the browser on to.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..settings import Settings
from ..state.sessions import SessionStore
from .cookies import Cookies
from .csrf import check_csrf
from .oidc import OIDCClient
from .sign_outs import SignOuts


class Logout:
    def __init__(
        self,
        settings: Settings,
        *,
        oidc: OIDCClient,
        store: SessionStore,
        cookies: Cookies,
        sign_outs: SignOuts,
    ) -> None:
        self._oidc = oidc
        self._store = store
        self._cookies = cookies
        self._sign_outs = sign_outs
        self._allowed_origins = settings.allowed_origins
        oidc_settings = settings.oidc
        self._post_logout_redirect = (
            oidc_settings.post_logout_redirect or settings.bff.public_origin.rstrip("/") + "/"
        )
        self._id_token_hint = oidc_settings.end_session_id_token_hint
        self._logout_hint = oidc_settings.end_session_logout_hint

    async def logout(self, request: Request) -> Response:
        raw_id = request.cookies.get(self._cookies.session)
        end_session_url = None
        if raw_id:
            check_csrf(request, self._allowed_origins)
            session = await self._store.get(raw_id)
            await self._store.delete(raw_id, ending="signed-out")
            if session is not None:
                handle = self._store.handle(raw_id)
                await self._sign_outs.ended(
                    request, "user", [(handle, session)], event="session.sign_out", status=200
                )
                end_session_url = await self._oidc.end_session_url(
                    self._post_logout_redirect,
                    id_token_hint=session.id_token if self._id_token_hint else None,
                    logout_hint={"sub": session.sub, "sid": session.sid}.get(self._logout_hint),
                )
        response = Response(
            msgspec.json.encode({"endSessionUrl": end_session_url}),
            media_type="application/json",
        )
        self._cookies.end_session(response)
        return response
