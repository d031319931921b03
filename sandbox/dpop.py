"""DPoP (RFC 9449): the proofs that come with tokens bound to a key, checked as a resource server.

A token whose claims carry ``cnf.jkt`` is sent as ``Authorization: DPoP <token>`` with one
``DPoP: <proof>`` header, a JWT that :class:`ProofChecker` checks per RFC 9449 4.3: ``typ``
``dpop+jwt``, an ``alg`` from ``sandbox.dpop_algorithms``, a public ``jwk`` whose signature
verifies, ``htm`` and ``htu`` naming this request (``htu`` compared after RFC 3986 normalisation:
scheme and host case, default port, percent-encoding), an ``iat`` inside the acceptance window,
``ath`` the hash of the token, the key's RFC 7638 thumbprint equal to ``cnf.jkt``, a ``nonce``
when ``sandbox.dpop_nonce_required`` asks for one, and a ``jti`` not seen before.

Seen ``jti`` and the nonce secret live in this process's memory: each process has its own, and a
restart forgets them (proofs older than the window are refused anyway). The replay memory is
bounded by ``sandbox.dpop_replay_cache_size``; when it is full of proofs still inside their window,
new proofs are refused (503) rather than old ones forgotten.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import math
import re
import secrets
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry
from joserfc.jws import extract_compact
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.config import SandboxSettings
from sandbox.problems import Problem, dpop_refused

PROOF_TYPE = "dpop+jwt"
NONCE_STATE = "dpop_nonce"
"""Where a request's state keeps the nonce :class:`NonceMiddleware` hands back."""
_PUBLIC_KEY_TYPES = ("EC", "RSA", "OKP")
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_RSA_BITS = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class _ProofLimits(jws.JWSRegistry):
    """joserfc's size limits, with room in the header for an RSA ``jwk`` of 4096 bits."""

    max_header_length = 4096
    max_payload_length = 4096


_PROOF_LIMITS = _ProofLimits()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


def access_token_hash(access_token: str) -> str:
    """``ath``: base64url(SHA-256(the token's ASCII))."""
    return _b64url(hashlib.sha256(access_token.encode("ascii")).digest())


def request_uri(request: Request) -> str:
    """The URI the client addressed, without query: scheme and host as the server sees them
    (the ``Host`` header), and the path as sent, before percent-decoding."""
    raw_path = request.scope.get("raw_path")
    path = bytes(raw_path).decode("latin-1") if raw_path else request.url.path
    return f"{request.url.scheme}://{request.url.netloc}{path}"


def normalized_uri(uri: str) -> str | None:
    """``uri`` without query and fragment, normalised per RFC 3986 6.2.2 and 6.2.3; ``None`` if
    it is not an absolute http(s) URI."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if ":" in host:
        host = f"[{host}]"
    authority = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _PERCENT.sub(_normalized_escape, parts.path) or "/"
    return f"{scheme}://{authority}{path}"


def _normalized_escape(match: re.Match[str]) -> str:
    octet = int(match.group(1), 16)
    return chr(octet) if octet in _UNRESERVED else f"%{octet:02X}"


class ProofChecker:
    """Checks the ``DPoP`` headers of requests that present a bound token (RFC 9449 4.3, 7)."""

    def __init__(self, settings: SandboxSettings, *, clock: Callable[[], float]) -> None:
        self.algorithms = settings.dpop_algorithms
        self._clock = clock
        self._max_age = settings.dpop_proof_max_age_seconds
        self._skew = settings.dpop_clock_skew_seconds
        self._replays = _ReplayCache(settings.dpop_replay_cache_size, clock=clock)
        self._nonces = (
            _Nonces(settings.dpop_nonce_rotation_seconds, clock=clock)
            if settings.dpop_nonce_required
            else None
        )

    def check(
        self, proofs: Sequence[str], *, method: str, uri: str, access_token: str, jkt: str
    ) -> str | None:
        """Accept the one proof in ``proofs`` for this request, or raise a 401 :class:`Problem`.

        Returns a newer nonce for the client when its proof carried the previous one.
        """
        if not proofs:
            raise self._invalid("A DPoP-bound token needs a DPoP proof in the DPoP header.")
        if len(proofs) > 1:
            raise self._invalid("Send one DPoP header, not several.")
        key_thumbprint, claims = self._verified(proofs[0])
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise self._invalid("The DPoP proof has no jti.")
        if claims.get("htm") != method:
            raise self._invalid("The DPoP proof's htm is not the method of this request.")
        htu = claims.get("htu")
        expected_uri = normalized_uri(uri)
        if not isinstance(htu, str) or normalized_uri(htu) != expected_uri:
            problem = self._invalid("The DPoP proof's htu is not the URL of this request.")
            problem.extra["expected_htu"] = expected_uri or uri
            raise problem
        iat = claims.get("iat")
        # abs(iat) < a bound refuses NaN, infinities and integers too large for float arithmetic.
        if not isinstance(iat, int | float) or isinstance(iat, bool) or not abs(iat) < 1e15:
            raise self._invalid("The DPoP proof has no iat, or not a time in seconds.")
        now = self._clock()
        if iat < now - self._max_age:
            raise self._invalid("The DPoP proof is too old: make a new one for every request.")
        if iat > now + self._skew:
            raise self._invalid("The DPoP proof's iat is in the future.")
        ath = claims.get("ath")
        if ath is None:
            raise self._invalid("The DPoP proof has no ath, the hash of the access token.")
        if ath != access_token_hash(access_token):
            raise self._invalid("The DPoP proof's ath is not the hash of this access token.")
        if key_thumbprint != jkt:
            raise dpop_refused(
                "The token is bound to another key than the one that signed the DPoP proof.",
                error="invalid_token",
                dpop_algs=self.algorithms,
            )
        fresh_nonce = self._check_nonce(claims.get("nonce"))
        if not self._replays.remember(jti, until=iat + self._max_age):
            raise self._invalid("The DPoP proof has been used before: make one per request.")
        return fresh_nonce

    def _verified(self, proof: str) -> tuple[str, dict[str, Any]]:
        """The thumbprint of the proof's key and its claims, once its signature verifies."""
        try:
            compact = extract_compact(proof.encode("ascii"), registry=_PROOF_LIMITS)
            header = compact.headers()
            claims = json.loads(compact.payload)
        # RecursionError: a document nested deeper than the JSON decoder allows.
        except (JoseError, ValueError, UnicodeError, binascii.Error, RecursionError) as exc:
            raise self._invalid("The DPoP proof is not a well-formed JWT.") from exc
        if not isinstance(claims, dict):
            raise self._invalid("The DPoP proof is not a well-formed JWT.")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower().removeprefix("application/") != PROOF_TYPE:
            raise self._invalid("The DPoP proof's typ is not dpop+jwt.")
        if "crit" in header or "b64" in header:
            raise self._invalid("The DPoP proof uses JWS extensions the sandbox does not take.")
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise self._invalid("The DPoP proof's alg is not one of those in algs.")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or jwk.get("kty") not in _PUBLIC_KEY_TYPES:
            raise self._invalid("The DPoP proof has no public key in its jwk header.")
        if _PRIVATE_MEMBERS & jwk.keys():
            raise self._invalid("The DPoP proof's jwk header holds a private key.")
        model = jws.JWSRegistry.algorithms[alg]
        try:
            if jwk["kty"] == "RSA" and _rsa_bits(jwk) < _MIN_RSA_BITS:
                raise self._invalid("The DPoP proof's RSA key is shorter than 2048 bits.")
            key = JWKRegistry.import_key(jwk)
            model.check_key(key)
            signing_input = compact.segments["header"] + b"." + compact.segments["payload"]
            signature = _unb64url(compact.segments["signature"])
            verified = model.verify(signing_input, signature, key)
            thumbprint = key.thumbprint()
        except (JoseError, ValueError, TypeError, KeyError, binascii.Error) as exc:
            raise self._invalid("The DPoP proof's jwk is not a key for its alg.") from exc
        if not verified:
            raise self._invalid("The DPoP proof's signature does not verify with its jwk.")
        return thumbprint, claims

    def _check_nonce(self, nonce: object) -> str | None:
        if self._nonces is None:
            return None
        current = self._nonces.current()
        if nonce == current:
            return None
        if not self._nonces.accepts(nonce):
            raise dpop_refused(
                "The sandbox requires a nonce in DPoP proofs: use the one in DPoP-Nonce.",
                error="use_dpop_nonce",
                dpop_algs=self.algorithms,
                nonce=current,
            )
        return current

    def _invalid(self, detail: str) -> Problem:
        return dpop_refused(detail, error="invalid_dpop_proof", dpop_algs=self.algorithms)


def _rsa_bits(jwk: dict[str, Any]) -> int:
    modulus = jwk.get("n")
    if not isinstance(modulus, str):
        raise ValueError("n")
    return int.from_bytes(_unb64url(modulus.encode("ascii")), "big").bit_length()


class _ReplayCache:
    """The ``jti`` (as SHA-256 digests) of accepted proofs, each until its proof expires."""

    def __init__(self, size: int, *, clock: Callable[[], float]) -> None:
        self._size = size
        self._clock = clock
        self._seen: set[bytes] = set()
        self._expiries: list[tuple[float, bytes]] = []

    def remember(self, jti: str, *, until: float) -> bool:
        """Record ``jti``; ``False`` if it was already there. Raises a 503 :class:`Problem` when
        the cache is full of proofs that could still be replayed."""
        now = self._clock()
        while self._expiries and self._expiries[0][0] < now:
            _, expired = heapq.heappop(self._expiries)
            self._seen.discard(expired)
        digest = hashlib.sha256(jti.encode("utf-8", "surrogatepass")).digest()
        if digest in self._seen:
            return False
        if len(self._seen) >= self._size:
            retry_after = max(1, math.ceil(self._expiries[0][0] - now))
            raise Problem(
                503,
                "service-unavailable",
                "Too many DPoP proofs arrived within their lifetime; retry shortly.",
                headers={"Retry-After": str(retry_after)},
            )
        self._seen.add(digest)
        heapq.heappush(self._expiries, (until, digest))
        return True


class _Nonces:
    """``DPoP-Nonce`` values: one per rotation period, derived from a secret of this process, so
    they are unpredictable; the current and the previous one are accepted."""

    def __init__(self, rotation_seconds: float, *, clock: Callable[[], float]) -> None:
        self._secret = secrets.token_bytes(32)
        self._rotation = rotation_seconds
        self._clock = clock

    def _period(self) -> int:
        return math.floor(self._clock() / self._rotation)

    def _nonce(self, period: int) -> str:
        mac = hmac.new(self._secret, period.to_bytes(8, "big", signed=True), hashlib.sha256)
        return _b64url(mac.digest()[:18])

    def current(self) -> str:
        return self._nonce(self._period())

    def accepts(self, nonce: object) -> bool:
        period = self._period()
        return nonce in (self._nonce(period), self._nonce(period - 1))


class NonceMiddleware:
    """Hands a client its next ``DPoP-Nonce`` (RFC 9449 8.2, 9) on whatever answer follows a
    proof that carried the previous nonce, and marks that answer ``Cache-Control: no-store``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_nonce(message: Message) -> None:
            if message["type"] == "http.response.start":
                nonce = scope.get("state", {}).get(NONCE_STATE)
                if nonce is not None:
                    headers = MutableHeaders(scope=message)
                    if "dpop-nonce" not in headers:
                        headers["DPoP-Nonce"] = nonce
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_nonce)
