"""JOSE by hand: a test is the attacker too, and libraries refuse to forge.

:func:`sign` makes a compact JWS with any header and any key; :func:`unsigned` one with any
signature at all; :func:`b64` and :func:`b64json` are the base64url pieces of both.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from joserfc import jws
from joserfc.jwk import Key


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: object) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def sign(claims: dict[str, Any], key: Key, alg: str = "RS256", **header: Any) -> str:
    """A compact JWS with any header (``None`` drops one), signed with any key."""
    protected: dict[str, Any] = {"alg": alg, **header}
    if "kid" not in header and key.kid is not None:
        protected["kid"] = key.kid
    protected = {k: v for k, v in protected.items() if v is not None}
    signing_input = f"{b64json(protected)}.{b64json(claims)}"
    signature = jws.JWSRegistry.algorithms[alg].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return f"{b64json(header)}.{b64json(claims)}.{signature}"
