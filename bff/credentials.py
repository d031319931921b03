"""The credential the BFF presents upstream on a principal's behalf.

``relay`` forwards the principal's own access token; ``internal-jwt`` has the BFF mint a
short-lived, audience-bound JWT naming the subject, the tenant and the scopes for that tenant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol

from .paths import JWKS_PATH
from .principal import Principal
from .problems import session_expired
from .settings import Settings

logger = logging.getLogger("bff.upstream")

REJECTIONS_WINDOW = 300.0
"""How long readiness keeps reporting that the backend refused the gateway's credential."""


class TokenMinter(Protocol):
    def mint(self, sub: str, tenant_id: str, scopes: list[str]) -> str: ...


class UpstreamCredentials:
    """Which token goes upstream, and what it means when the backend refuses it.

    The gateway forwards only tokens it has checked (a bearer token), renewed before expiry (a
    session's) or minted itself, so a 401 from the backend is never the user's to fix: the two
    disagree on issuer, keys or audience. :meth:`refused` logs that as the configuration error it
    is, with what to check; :meth:`refusals` reports it to readiness for
    :data:`REJECTIONS_WINDOW` seconds.
    """

    def __init__(
        self,
        mode: Literal["relay", "internal-jwt"],
        minter: TokenMinter | None = None,
        *,
        explain: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode == "internal-jwt" and minter is None:
            raise ValueError("internal-jwt credentials need a token minter")
        self._mode = mode
        self._minter = minter
        self._explain = explain
        self._clock = clock
        self._refused: list[float] = []

    @classmethod
    def for_settings(cls, settings: Settings, minter: TokenMinter | None) -> UpstreamCredentials:
        """The configured mode, explaining a refusal in the settings' own terms."""
        if settings.upstream.credential == "relay":
            explain = (
                f"the backend must trust access tokens of {settings.oidc.issuer} (its keys and "
                "the audience the provider puts in them: see [oidc].extra_authorization_params "
                '"resource" or "audience"), or set [upstream].credential = "internal-jwt"'
            )
        else:
            issuer = settings.internal_jwt.issuer or settings.bff.public_origin.rstrip("/")
            explain = (
                f"the backend must trust issuer {issuer} with keys from "
                f"{settings.bff.public_origin.rstrip('/')}{JWKS_PATH} and audience "
                f"{settings.internal_jwt.audience!r} ([internal_jwt])"
            )
        return cls(settings.upstream.credential, minter, explain=explain)

    @property
    def relays_caller_token(self) -> bool:
        return self._mode == "relay" or self._minter is None

    def token_for(self, principal: Principal, tenant_id: str) -> str:
        minter = None if self._mode == "relay" else self._minter
        if minter is None:
            if not principal.access_token:
                raise session_expired("Your session has no access token; sign in again.")
            return principal.access_token
        return minter.mint(principal.subject, tenant_id, sorted(principal.scopes(tenant_id)))

    def refused(self, request_id: str | None) -> None:
        """The backend answered 401 to the credential of this request: log what to check."""
        now = self._clock()
        self._refused = [t for t in self._refused if now - t < REJECTIONS_WINDOW] + [now]
        what = "a relayed access token" if self.relays_caller_token else "a minted token"
        logger.error(
            "configuration error: the backend refused %s (401, request %s); %s",
            what,
            request_id,
            self._explain,
        )

    def refusals(self) -> str | None:
        """For readiness: how often the backend refused our credential lately, or None."""
        now = self._clock()
        recent = [t for t in self._refused if now - t < REJECTIONS_WINDOW]
        if not recent:
            return None
        what = "relayed access tokens" if self.relays_caller_token else "minted tokens"
        return (
            f"the backend refused {what} {len(recent)} time(s) in the last "
            f"{REJECTIONS_WINDOW / 60:g} min, last {now - recent[-1]:.0f} s ago: "
            "a configuration error (see the log)"
        )
