"""Sender-constrained credentials (DPoP, RFC 9449): a token that goes with a proof of its key.

The client does not sign anything itself: a :class:`DPoPToken` brings its key, anything with a
``proof`` method (the gateway's per-session key). Each attempt carries a fresh proof for its
method and URL with ``ath``, and the backend's latest ``DPoP-Nonce``; a 401 asking for a newer
nonce (``use_dpop_nonce``) is answered once more with it, within the same attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import httpx


class ProofKey(Protocol):
    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        now: float | None = None,
    ) -> str:
        """A DPoP proof JWT for one request to ``url`` (the key drops its query, RFC 9449 4.2)."""
        ...


class DPoPToken:
    """An access token bound to ``key``: sent as ``Authorization: DPoP`` with ``DPoP: <proof>``.

    ``repr()`` never shows the token."""

    __slots__ = ("access_token", "key")

    def __init__(self, access_token: str, key: ProofKey) -> None:
        self.access_token = access_token
        self.key = key

    def __repr__(self) -> str:
        return "DPoPToken(<redacted>)"


Credential = str | DPoPToken
"""What a call presents: a bearer token or API key, or a DPoP-bound token."""


def with_proof(
    headers: dict[str, str], method: str, url: httpx.URL, dpop: DPoPToken, nonce: str | None
) -> dict[str, str]:
    """``headers`` with a fresh proof of ``dpop``'s key for one attempt of this request."""
    proof = dpop.key.proof(method, str(url), access_token=dpop.access_token, nonce=nonce)
    return {**headers, "DPoP": proof}


def asks_for_nonce(status: int, headers: Mapping[str, str]) -> bool:
    """RFC 9449 9: the backend wants a proof with the nonce this answer carries."""
    return (
        status == 401
        and bool(headers.get("dpop-nonce"))
        and "use_dpop_nonce" in headers.get("www-authenticate", "")
    )
