"""Validation of JWTs signed by the identity provider: bearer tokens and logout tokens.

Bearer JWTs are an alternative principal to the session cookie; logout tokens arrive at
`/auth/backchannel-logout` (OpenID Connect Back-Channel Logout 1.0, section 2.6). Both are checked
against the provider's JWKS with asymmetric algorithms only (:data:`SUPPORTED_ALGORITHMS`; for ID
and logout tokens, those of them the provider says it uses), so `alg: none`, HMAC algorithms (RS/HS
confusion) and keys named by the token itself (`jku`, `x5u`, `jwk`, `x5c`) never get a chance.

Exceptions::

    Exception
    ├── InvalidToken        the token is rejected; `reason` is a short slug (401 for the caller)
    └── JWKSUnavailable     the provider's key set could not be fetched and none is cached
                            (the token was not judged; 503 for the caller)
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Collection
from typing import Any

import httpx
import msgspec
from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, JWKRegistry, Key, OKPKey, RSAKey

from ..cache import StaleWhileRefresh
from ..state.replay import MemoryReplayCache, ReplayCache

__all__ = [
    "BACKCHANNEL_LOGOUT_EVENT",
    "SUPPORTED_ALGORITHMS",
    "InvalidToken",
    "JWKSCache",
    "JWKSUnavailable",
    "JWTValidator",
    "LogoutToken",
    "LogoutTokenValidator",
]

#: The only algorithms a validator may be configured with: asymmetric signatures.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
    | {"Ed25519", "Ed448", "EdDSA"}  # RFC 9864 names; EdDSA is what many providers still send
)
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"

# Headers that name a key or a key source chosen by whoever made the token: trusting them lets an
# attacker sign with their own key. `b64` and `crit` change how the signature is computed.
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "b64", "crit"})
_MAX_TOKEN_LENGTH = 16 * 1024
_MAX_JWKS_BYTES = 512 * 1024
_LOGOUT_TYPES = frozenset({"logout+jwt", "application/logout+jwt"})


class InvalidToken(Exception):
    """The token is rejected. `reason` is a stable slug, e.g. `expired` or `bad-signature`."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class JWKSUnavailable(Exception):
    """The provider's key set could not be fetched and no earlier copy is cached."""


class LogoutToken(msgspec.Struct, frozen=True):
    """The parts of a valid logout token the BFF acts on: end sessions by `sid` or by `sub`."""

    sub: str | None
    sid: str | None
    jti: str
    iat: int


def _import_keys(document: Any) -> tuple[dict[str, Key], list[Key]]:
    """Signature keys of a JWKS document by kid, plus those without a kid."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    by_kid: dict[str, Key] = {}
    without_kid: list[Key] = []
    for entry in document["keys"]:
        # Only public-key types can verify our allowed algorithms; an "oct" key in the set must
        # never become an HMAC secret.
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        public = {k: v for k, v in entry.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        try:
            key = JWKRegistry.import_key(public)
        except (JoseError, ValueError, TypeError):
            continue
        kid = entry.get("kid")
        if isinstance(kid, str) and kid:
            by_kid[kid] = key
        else:
            without_kid.append(key)
    return by_kid, without_kid


class _KeySet(msgspec.Struct, frozen=True):
    by_kid: dict[str, Key]
    without_kid: list[Key]

    def find(self, kid: str | None) -> Key | None:
        if kid is not None:
            return self.by_kid.get(kid)
        # A token without kid is only unambiguous when the set holds exactly one key.
        candidates = [*self.by_kid.values(), *self.without_kid]
        return candidates[0] if len(candidates) == 1 else None


class JWKSCache:
    """The identity provider's signing keys, fetched from `jwks_uri` and kept.

    An unknown `kid` (the provider rotated keys) triggers a refetch, but at most one fetch per
    `min_refetch_interval` seconds in total, so a flood of tokens with made-up kids costs the
    provider nothing; concurrent misses share one fetch. The set is also refreshed when older than
    `max_age`: in the background, while the copy it has keeps serving, so a provider that is away
    (or slow) costs a bearer call nothing as long as the token's key is known
    (:class:`bff.cache.StaleWhileRefresh`).
    """

    def __init__(
        self,
        jwks_uri: str,
        *,
        http: httpx.AsyncClient,
        min_refetch_interval: float = 60.0,
        max_age: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jwks_uri = jwks_uri
        self._http = http
        self._keys = StaleWhileRefresh(
            self._fetch,
            name=f"keys of {jwks_uri}",
            errors=JWKSUnavailable,
            max_age=max_age,
            retry_after=min_refetch_interval,
            clock=clock,
        )

    @property
    def loaded(self) -> bool:
        """True once a key set has been fetched."""
        return self._keys.value is not None

    async def _fetch(self) -> _KeySet:
        try:
            response = await self._http.get(self.jwks_uri, headers={"Accept": "application/json"})
            response.raise_for_status()
            if len(response.content) > _MAX_JWKS_BYTES:
                raise ValueError("JWKS document too large")
            by_kid, without_kid = _import_keys(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise JWKSUnavailable(f"cannot fetch JWKS from {self.jwks_uri}: {exc}") from exc
        return _KeySet(by_kid, without_kid)

    async def refresh(self) -> None:
        """Fetch the key set now, ignoring the rate limit (start-up, readiness checks)."""
        await self._keys.reload(force=True)

    async def get_key(self, kid: str | None) -> Key:
        """Return the key for `kid`, fetching the set when needed and allowed.

        :raises InvalidToken: `unknown-kid` when the key is not in the (re)fetched set.
        :raises JWKSUnavailable: when no key set could ever be fetched.
        """
        keys = self._keys.current()
        key = keys.find(kid) if keys is not None else None
        if key is not None:
            return key
        keys = await self._keys.reload(good=lambda keys: keys.find(kid) is not None)
        key = keys.find(kid)
        if key is None:
            raise InvalidToken("unknown-kid", f"no signing key {kid!r} in the provider's JWKS")
        return key


def _is_number(value: object) -> bool:
    # bool is an int subclass; `"exp": true` is not a date.
    return isinstance(value, int | float) and not isinstance(value, bool)


class _SignedJWTVerifier:
    """Signature and header checks shared by bearer and logout token validation."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: JWKSCache,
        algorithms: Collection[str] = ("RS256", "ES256"),
        leeway: float = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        algorithms = tuple(algorithms)
        if not algorithms:
            raise ValueError("at least one signing algorithm is required")
        unsupported = set(algorithms) - SUPPORTED_ALGORITHMS
        if unsupported:
            raise ValueError(
                f"unsupported JWT algorithms {sorted(unsupported)}; "
                f"choose from {sorted(SUPPORTED_ALGORITHMS)}"
            )
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self.leeway = leeway
        self._jwks = jwks
        self._clock = clock
        # Unknown (non-forbidden) headers are tolerated: providers add their own.
        self._registry = jws.JWSRegistry(algorithms=list(algorithms), strict_check_header=False)

    async def _verify(self, token: object) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (header, claims) of a correctly signed compact JWS; raise `InvalidToken`."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_LENGTH:
            raise InvalidToken("malformed", "not a compact JWT")
        parts = token.split(".")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise InvalidToken("malformed", "a signed JWT has three parts")
        try:
            obj = jws.extract_compact(token.encode("ascii"), registry=self._registry)
        except (JoseError, ValueError, UnicodeError) as exc:
            raise InvalidToken("malformed", "undecodable JWT") from exc
        header: dict[str, Any] = dict(obj.headers())

        alg = header.get("alg")
        if alg not in self.algorithms:
            raise InvalidToken("disallowed-alg", f"algorithm {alg!r} is not accepted")
        forbidden = sorted(_FORBIDDEN_HEADERS & header.keys())
        if forbidden:
            raise InvalidToken("forbidden-header", f"header {forbidden} is not accepted")
        if not parts[2]:
            raise InvalidToken("bad-signature", "the signature is empty")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("malformed", "kid must be a string")

        key = await self._jwks.get_key(kid)
        if not isinstance(key, RSAKey | ECKey | OKPKey):
            raise InvalidToken("bad-signature", "key type cannot verify this algorithm")
        if key.alg is not None and key.alg != alg:
            raise InvalidToken("bad-signature", f"key {kid!r} is for {key.alg}, not {alg}")
        try:
            with warnings.catch_warnings():
                # joserfc flags "EdDSA" as superseded by RFC 9864's Ed25519 / Ed448; a provider
                # that still signs with it is not a security problem of ours to report per token.
                warnings.simplefilter("ignore", SecurityWarning)
                valid = jws.validate_compact(obj, key, registry=self._registry)
        except JoseError as exc:
            # Wrong key type or curve for the algorithm.
            raise InvalidToken("bad-signature", str(exc)) from exc
        if not valid:
            raise InvalidToken("bad-signature")

        try:
            claims = json.loads(obj.payload)
        except (TypeError, ValueError) as exc:
            raise InvalidToken("malformed", "payload is not JSON") from exc
        if not isinstance(claims, dict):
            raise InvalidToken("malformed", "payload is not a JSON object")
        return header, claims

    def _check_issuer_and_audience(self, claims: dict[str, Any]) -> None:
        if claims.get("iss") != self.issuer:
            raise InvalidToken("wrong-issuer")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or self.audience not in audiences:
            raise InvalidToken("wrong-audience")

    def _check_exp(self, claims: dict[str, Any], now: float, *, required: bool) -> None:
        exp = claims.get("exp")
        if exp is None:
            if required:
                raise InvalidToken("missing-claim", "exp")
            return
        if not _is_number(exp):
            raise InvalidToken("invalid-claim", "exp")
        if now >= exp + self.leeway:
            raise InvalidToken("expired")

    def _check_nbf(self, claims: dict[str, Any], now: float) -> None:
        nbf = claims.get("nbf")
        if nbf is None:
            return
        if not _is_number(nbf):
            raise InvalidToken("invalid-claim", "nbf")
        if nbf > now + self.leeway:
            raise InvalidToken("not-yet-valid")


class JWTValidator(_SignedJWTVerifier):
    """Validates bearer JWTs issued by the identity provider for this API.

    Accepted only when: signed with one of `algorithms` by a key of the provider's JWKS, without
    key-carrying headers; `iss` equals `issuer`; `aud` contains `audience`; `exp` present and not
    past; `nbf`, if present, not in the future (both with `leeway` seconds); `sub` present.
    A token typed `logout+jwt` is never a bearer token.
    """

    async def validate(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid bearer JWT.

        :raises InvalidToken: with the reason it was rejected.
        :raises JWKSUnavailable: when the provider's keys cannot be fetched.
        """
        header, claims = await self._verify(token)
        typ = header.get("typ")
        if isinstance(typ, str) and typ.lower() in _LOGOUT_TYPES:
            raise InvalidToken("wrong-type", "a logout token is not a bearer token")
        self._check_issuer_and_audience(claims)
        now = self._clock()
        self._check_exp(claims, now, required=True)
        self._check_nbf(claims, now)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("missing-claim", "sub")
        return claims


class LogoutTokenValidator(_SignedJWTVerifier):
    """Validates back-channel logout tokens (OpenID Connect Back-Channel Logout 1.0, 2.6).

    `audience` is the BFF's OAuth client id. Beyond signature, `iss` and `aud`: `iat` present and
    not older than `max_age` (nor in the future) with `leeway`; `exp`, if present, not past;
    `events` holds the back-channel-logout event; `sub` or `sid` present; no `nonce`; `jti`
    present and never seen before (`replay_cache`); `typ`, if present, is `logout+jwt`.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: JWKSCache,
        algorithms: Collection[str] = ("RS256", "ES256"),
        leeway: float = 30,
        max_age: float = 120.0,
        replay_cache: ReplayCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            issuer=issuer,
            audience=audience,
            jwks=jwks,
            algorithms=algorithms,
            leeway=leeway,
            clock=clock,
        )
        self.max_age = max_age
        # A jti must be remembered at least as long as its iat would still be accepted.
        self._replay_cache: ReplayCache = replay_cache or MemoryReplayCache(
            ttl=max_age + 2 * leeway
        )

    async def validate_logout_token(self, token: str) -> LogoutToken:
        """Return the logout request carried by a valid, first-seen logout token.

        :raises InvalidToken: with the reason it was rejected (`replayed` for a second use).
        :raises JWKSUnavailable: when the provider's keys cannot be fetched.
        """
        header, claims = await self._verify(token)
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _LOGOUT_TYPES):
            raise InvalidToken("wrong-type", "typ must be logout+jwt")
        self._check_issuer_and_audience(claims)
        now = self._clock()
        iat = claims.get("iat")
        if iat is None:
            raise InvalidToken("missing-claim", "iat")
        if not _is_number(iat):
            raise InvalidToken("invalid-claim", "iat")
        if iat > now + self.leeway:
            raise InvalidToken("issued-in-future")
        if now - iat > self.max_age + self.leeway:
            raise InvalidToken("too-old")
        self._check_exp(claims, now, required=False)
        self._check_nbf(claims, now)

        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(
            events.get(BACKCHANNEL_LOGOUT_EVENT), dict
        ):
            raise InvalidToken("missing-claim", "events with the back-channel logout event")
        if "nonce" in claims:
            raise InvalidToken("forbidden-claim", "nonce")
        sub, sid = claims.get("sub"), claims.get("sid")
        if sub is not None and (not isinstance(sub, str) or not sub):
            raise InvalidToken("invalid-claim", "sub")
        if sid is not None and (not isinstance(sid, str) or not sid):
            raise InvalidToken("invalid-claim", "sid")
        if sub is None and sid is None:
            raise InvalidToken("missing-claim", "sub or sid")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise InvalidToken("missing-claim", "jti")

        # Last, so that only otherwise valid tokens occupy the replay cache.
        if not await self._replay_cache.remember(f"{self.issuer} {jti}"):
            raise InvalidToken("replayed")
        return LogoutToken(sub=sub, sid=sid, jti=jti, iat=int(iat))
