"""What happens whenever sessions end, however they end: each is counted, audited, and its
refresh token revoked at the provider.

The user signing out (:mod:`bff.auth.logout`), ending one of their sessions or all of them
(:mod:`bff.auth.user_sessions`), and the provider's back-channel logout
(:mod:`bff.auth.backchannel`) all go through :class:`SignOuts`. The dashboard's open tabs hear
of each end from the session store, which announces it with why (:mod:`bff.auth.session_events`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from starlette.requests import Request

from ..audit import Auditor
from ..observability import Metrics
from ..state.sessions import Session
from .token_endpoint import TokenEndpoint

Kind = Literal["user", "revoked", "backchannel"]
"""Who ended them: the user signing out here, the user ending sessions (here or on another
device), or the provider (OpenID Connect Back-Channel Logout)."""


class SignOuts:
    def __init__(self, *, tokens: TokenEndpoint, audit: Auditor, metrics: Metrics) -> None:
        self._tokens = tokens
        self._audit = audit
        self._sign_outs = metrics.sign_outs

    async def ended(
        self,
        request: Request,
        kind: Kind,
        ended: Sequence[tuple[str | None, Session]],
        *,
        event: str,
        status: int,
    ) -> None:
        """Sessions ended by ``request``, each ``(handle, session)``: audited as ``event``."""
        self._sign_outs.labels(kind).inc(len(ended))
        audit = self._audit
        for handle, session in ended:
            record = audit.event(
                request.scope,
                event,
                "succeeded",
                actor=audit.session_actor(session.sub),
                status=status,
                session_id=handle,
            )
            await audit.record_after(record, event)
            if session.refresh_token:
                await self._tokens.revoke(session.refresh_token)

    async def ended_by_provider(self, request: Request, sub: str | None, count: int) -> None:
        """The provider ended ``count`` sessions (the store no longer has their tokens)."""
        self._sign_outs.labels("backchannel").inc(count)
        audit = self._audit
        event = "session.backchannel_logout"
        record = audit.event(
            request.scope, event, "succeeded", actor=audit.session_actor(sub), status=200
        )
        await audit.record_after(record, event)
