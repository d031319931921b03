"""DPoP (RFC 9449): the key a session's tokens are bound to, and the proofs made with it.

With ``[oidc].dpop = true`` every sign-in gets its own key (ES256, P-256), made when the sign-in
starts so the pushed request and the authorization code are bound to it too (RFC 9449 10: the
``DPoP`` header at the PAR endpoint, ``dpop_jkt`` in a plain authorization request). It is kept
with the pending sign-in and then with the session, as a private JWK: sealed with them in Redis
(``[sessions].encryption_keys_file``), never logged, never in ``/auth/session``. Per session
rather than per instance: a copied session record is useless without its key, and one instance's
key, once leaked, would not unlock every session.

Every request that presents or obtains a bound token carries a fresh proof (:meth:`DPoPKey.proof`):
its own ``jti``, the method and URL (``htu``, without query and fragment), ``iat``, the server's
latest ``nonce`` when it gave one (:class:`Nonces`), and ``ath``, the hash of the access token it
accompanies. A proof costs about 0.1 ms of CPU per call under load, the ECDSA
signature its largest part (bench/README.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ALGORITHM = "ES256"
_CURVE_BYTES = 32
_KEYS_PARSED = 4096
"""Parsed session keys kept in memory (a key is parsed once, not at every request)."""
_SERVERS = 64
"""Servers whose latest nonce is remembered (a provider's endpoints, a backend)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=False).encode()


class DPoPKey:
    """One session's proof-of-possession key. ``repr()`` shows only its thumbprint."""

    def __init__(self, private: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private.curve, ec.SECP256R1):
            raise ValueError("a DPoP key is a P-256 key")
        self._private = private
        numbers = private.public_key().public_numbers()
        self._public = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64(numbers.x.to_bytes(_CURVE_BYTES, "big")),
            "y": _b64(numbers.y.to_bytes(_CURVE_BYTES, "big")),
        }
        # RFC 7638: the required members, in lexicographic order, without whitespace.
        self.thumbprint = _b64(hashlib.sha256(_json(self._public)).digest())
        """``jkt``: what a bound token's ``cnf`` names and ``dpop_jkt`` sends."""
        self._header = _b64(_json({"typ": "dpop+jwt", "alg": ALGORITHM, "jwk": self._public}))

    @classmethod
    def generate(cls) -> DPoPKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @staticmethod
    def from_jwk(text: str) -> DPoPKey:
        """The key a session keeps (:meth:`to_jwk`); parsed once per process."""
        return _parsed(text)

    @staticmethod
    def kept(text: str | None) -> DPoPKey | None:
        """The key of a session or pending sign-in (its ``dpop_key``), None for unbound tokens."""
        return _parsed(text) if text else None

    def to_jwk(self) -> str:
        """The private key as a JWK, for the session record (which is sealed at rest)."""
        d = self._private.private_numbers().private_value.to_bytes(_CURVE_BYTES, "big")
        return json.dumps({**self._public, "d": _b64(d)}, separators=(",", ":"))

    def __repr__(self) -> str:
        return f"DPoPKey(jkt={self.thumbprint!r})"

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        now: float | None = None,
    ) -> str:
        """A proof for one request (RFC 9449 4.2)."""
        claims: dict[str, object] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": target_uri(url),
            "iat": int(time.time() if now is None else now),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = _b64(hashlib.sha256(access_token.encode("ascii")).digest())
        signing_input = f"{self._header}.{_b64(_json(claims))}"
        der = self._private.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_CURVE_BYTES, "big") + s.to_bytes(_CURVE_BYTES, "big")
        return f"{signing_input}.{_b64(signature)}"

    def headers(
        self, method: str, url: str, access_token: str, nonce: str | None, now: float | None = None
    ) -> dict[str, str]:
        """What presents ``access_token``, bound to this key, in one request (RFC 9449 7.1)."""
        proof = self.proof(method, url, access_token=access_token, nonce=nonce, now=now)
        return {"Authorization": f"DPoP {access_token}", "DPoP": proof}


@lru_cache(maxsize=_KEYS_PARSED)
def _parsed(text: str) -> DPoPKey:
    jwk = json.loads(text)
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError("not a P-256 private JWK")
    private = ec.derive_private_key(int.from_bytes(_unb64(jwk["d"]), "big"), ec.SECP256R1())
    return DPoPKey(private)


def target_uri(url: str) -> str:
    """``htu``: the request's URI without query and fragment (RFC 9449 4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


class Nonces:
    """The latest ``DPoP-Nonce`` each server gave (RFC 9449 8 and 9), by origin, bounded."""

    def __init__(self) -> None:
        self._latest: OrderedDict[str, str] = OrderedDict()

    @staticmethod
    def _origin(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}".lower()

    def get(self, url: str) -> str | None:
        return self._latest.get(self._origin(url))

    def remember(self, url: str, headers: Mapping[str, str]) -> bool:
        """Keep the nonce an answer from ``url`` carries; whether it carried one."""
        nonce = headers.get("dpop-nonce")
        if not nonce:
            return False
        origin = self._origin(url)
        self._latest[origin] = nonce
        self._latest.move_to_end(origin)
        while len(self._latest) > _SERVERS:
            self._latest.popitem(last=False)
        return True
