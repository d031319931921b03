"""The credential the BFF presents upstream on a principal's behalf.

``relay`` forwards the principal's own access token; ``internal-jwt`` has the BFF mint a
short-lived, audience-bound JWT naming the subject, the tenant and the scopes for that tenant.
"""

from __future__ import annotations

from typing import Literal, Protocol

from .principal import Principal
from .problems import session_expired


class TokenMinter(Protocol):
    def mint(self, sub: str, tenant_id: str, scopes: list[str]) -> str: ...


class UpstreamCredentials:
    def __init__(
        self, mode: Literal["relay", "internal-jwt"], minter: TokenMinter | None = None
    ) -> None:
        if mode == "internal-jwt" and minter is None:
            raise ValueError("internal-jwt credentials need a token minter")
        self._mode = mode
        self._minter = minter

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
