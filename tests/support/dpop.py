"""DPoP (RFC 9449) as a client does it: a key, and a proof of it for each request.

``ProofKey()`` is an ES256 key (P-256); :attr:`ProofKey.jkt` is the thumbprint a bound token
names in ``cnf``; :meth:`ProofKey.proof` signs the ``DPoP`` header of one request, and its
keyword arguments replace or (with ``None``) drop any claim or header, so a test can forge too.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc.jwk import ECKey, Key

from tests.support.tokens import b64, sign


def ath(access_token: str) -> str:
    """The ``ath`` claim for ``access_token``."""
    return b64(hashlib.sha256(access_token.encode("ascii")).digest())


def htu(url: str) -> str:
    """The ``htu`` claim for ``url``: without query and fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


class ProofKey:
    """A client's proof-of-possession key (ES256 unless given another key and ``alg``)."""

    def __init__(self, key: Key | None = None, alg: str = "ES256") -> None:
        self.key = key if key is not None else ECKey.generate_key("P-256", private=True)
        self.alg = alg
        self.jkt = self.key.thumbprint()

    def cnf(self) -> dict[str, str]:
        """The ``cnf`` claim of a token bound to this key."""
        return {"jkt": self.jkt}

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        now: float | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """The ``DPoP`` header for ``method url``: ``iat`` from ``now`` (default: the real
        clock), ``ath`` when ``access_token`` is given, ``nonce`` when given."""
        payload: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": htu(url),
            "iat": int(time.time() if now is None else now),
        }
        if access_token is not None:
            payload["ath"] = ath(access_token)
        if nonce is not None:
            payload["nonce"] = nonce
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        protected = {"typ": "dpop+jwt", "jwk": self.key.as_dict(private=False), "kid": None}
        protected.update(header or {})
        alg = protected.pop("alg", self.alg)
        return sign(payload, self.key, alg, **protected)
