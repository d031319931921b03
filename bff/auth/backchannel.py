"""``POST /auth/backchannel-logout``: the provider ends sessions (OpenID Connect Back-Channel
Logout 1.0). Its logout token is checked (:class:`bff.auth.jwt_validation.LogoutTokenValidator`,
each ``jti`` once), then every session of its ``sid``, or else of its ``sub``, ends. Answers are
the specification's: 200, 400 with an OAuth error, or 503 while the provider's keys are away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..http import ContentType, read_body
from ..state.replay import ReplayCache
from ..state.sessions import SessionStore
from .discovery import Discovery, ProviderUnavailable
from .jwt_validation import InvalidToken, JWKSUnavailable, LogoutTokenValidator
from .sign_outs import SignOuts

logger = logging.getLogger("bff.auth")

_MAX_BYTES = 32 * 1024
"""A logout token is small; the body is bounded."""


class BackchannelLogout:
    def __init__(
        self,
        *,
        client_id: str,
        discovery: Discovery,
        store: SessionStore,
        replay_cache: ReplayCache,
        sign_outs: SignOuts,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_id = client_id
        self._discovery = discovery
        self._store = store
        self._replay_cache = replay_cache
        self._sign_outs = sign_outs
        self._clock = clock
        self._validator: LogoutTokenValidator | None = None

    async def logout(self, request: Request) -> Response:
        if ContentType(request.headers.get("content-type")).media != (
            "application/x-www-form-urlencoded"
        ):
            return _error("send logout_token as application/x-www-form-urlencoded")
        # Parsed here rather than with request.form(), which needs python-multipart even for
        # urlencoded bodies.
        body = await read_body(request, _MAX_BYTES)
        if body is None:
            return _error("the request body is too large")
        try:
            fields = parse_qs(body.decode("ascii"), strict_parsing=True, max_num_fields=4)
        except (UnicodeDecodeError, ValueError):
            return _error("the request body is not a valid form")
        values = fields.get("logout_token", [])
        token = values[0] if len(values) == 1 else None
        if not token:
            return _error("logout_token is required")
        try:
            validator = await self._logout_tokens()
            logout = await validator.validate_logout_token(token)
        except InvalidToken as exc:
            logger.info("back-channel logout token rejected: %s", exc.reason)
            return _error(f"invalid logout token ({exc.reason})")
        except (JWKSUnavailable, ProviderUnavailable) as exc:
            logger.warning("back-channel logout cannot validate tokens: %s", exc)
            return Response(status_code=503, headers={"Cache-Control": "no-store"})
        ended = 0
        if logout.sid:
            ended += await self._store.delete_by_sid(logout.sid, ending="backchannel-logout")
        elif logout.sub:
            ended += await self._store.delete_by_sub(logout.sub, ending="backchannel-logout")
        logger.info("back-channel logout ended %d session(s)", ended)
        await self._sign_outs.ended_by_provider(request, logout.sub, ended)
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    async def _logout_tokens(self) -> LogoutTokenValidator:
        if self._validator is None:
            discovery = self._discovery
            self._validator = LogoutTokenValidator(
                issuer=(await discovery.metadata()).issuer,
                audience=self._client_id,
                algorithms=await discovery.id_token_algorithms(),
                jwks=await discovery.jwks(),
                replay_cache=self._replay_cache,
                clock=self._clock,
            )
        return self._validator


def _error(description: str) -> Response:
    return Response(
        msgspec.json.encode({"error": "invalid_request", "error_description": description}),
        status_code=400,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
