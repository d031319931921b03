"""Bearer JWT and back-channel logout token validation: the attack table and the JWKS cache."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey
from redis.asyncio import BlockingConnectionPool, Redis

from bff.auth.jwt_validation import (
    BACKCHANNEL_LOGOUT_EVENT,
    InvalidToken,
    JWKSCache,
    JWKSUnavailable,
    JWTValidator,
    LogoutToken,
    LogoutTokenValidator,
)
from bff.state.replay import MemoryReplayCache, RedisReplayCache
from tests.support.clock import FakeClock
from tests.support.redis import RedisServer
from tests.support.tokens import b64, b64json, sign, unsigned

ISSUER = "https://idp.example.test"
AUDIENCE = "flows-bff"
CLIENT_ID = "flows-bff-client"
JWKS_URI = "https://idp.example.test/jwks"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"})


@pytest.fixture(scope="module")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "ec-1"})


@pytest.fixture(scope="module")
def rotated_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})


@pytest.fixture(scope="module")
def attacker_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "zen_tenants": {"ten_acme": ["read:delivery-flows"]},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


class IdP:
    """The provider's JWKS endpoint: what it serves and how often it was asked."""

    def __init__(self, router: respx.MockRouter, keys: list[Key]) -> None:
        self.keys = keys
        self.status = 200
        self.hang: asyncio.Event | None = None
        """When set to an event, answers wait for it: a provider that stopped answering."""
        self.route = router.get(JWKS_URI).mock(side_effect=self._serve)

    async def _serve(self, request: httpx.Request) -> httpx.Response:
        # Yield to the loop so concurrent validations really overlap with the fetch.
        for _ in range(3):
            await asyncio.sleep(0)
        if self.hang is not None:
            await self.hang.wait()
        if self.status != 200:
            return httpx.Response(self.status, text="down")
        document = {"keys": [k.as_dict(private=False) for k in self.keys]}
        return httpx.Response(200, json=document)

    @property
    def calls(self) -> int:
        return self.route.call_count


class World:
    def __init__(self, idp: IdP, jwks: JWKSCache, clock: FakeClock, mono: FakeClock) -> None:
        self.idp = idp
        self.jwks = jwks
        self.clock = clock
        self.mono = mono
        self.validator = JWTValidator(issuer=ISSUER, audience=AUDIENCE, jwks=jwks, clock=clock)
        self.logout = LogoutTokenValidator(
            issuer=ISSUER,
            audience=CLIENT_ID,
            jwks=jwks,
            clock=clock,
            replay_cache=MemoryReplayCache(ttl=300, clock=clock),
        )


@pytest.fixture
async def world(rsa_key: RSAKey, ec_key: ECKey) -> AsyncIterator[World]:
    clock, mono = FakeClock(NOW), FakeClock(1000.0)
    with respx.mock(assert_all_called=False) as router:
        idp = IdP(router, [rsa_key, ec_key])
        async with httpx.AsyncClient() as http:
            jwks = JWKSCache(JWKS_URI, http=http, min_refetch_interval=60, clock=mono)
            yield World(idp, jwks, clock, mono)


async def rejected(world: World, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await world.validator.validate(token)
    return caught.value.reason


# --- bearer tokens -------------------------------------------------------------------------


async def test_valid_rs256_token_is_accepted(world: World, rsa_key: RSAKey) -> None:
    result = await world.validator.validate(sign(claims(), rsa_key))
    assert result["sub"] == "alice"
    assert result["zen_tenants"] == {"ten_acme": ["read:delivery-flows"]}
    assert world.idp.calls == 1


async def test_valid_es256_token_with_audience_list_is_accepted(
    world: World, ec_key: ECKey
) -> None:
    token = sign(claims(aud=["other-api", AUDIENCE]), ec_key, alg="ES256")
    assert (await world.validator.validate(token))["aud"] == ["other-api", AUDIENCE]


async def test_keys_are_cached_between_validations(world: World, rsa_key: RSAKey) -> None:
    for _ in range(5):
        await world.validator.validate(sign(claims(), rsa_key))
    assert world.idp.calls == 1


def _hs256_with_public_key(rsa_key: RSAKey) -> str:
    # The classic RS/HS confusion: HMAC keyed with the RSA public key, which anyone can fetch.
    secret = rsa_key.as_pem(private=False)
    header = b64json({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"})
    payload = b64json(claims())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


def _tampered(rsa_key: RSAKey) -> str:
    header, _, signature = sign(claims(), rsa_key).split(".")
    return f"{header}.{b64json(claims(sub='mallory'))}.{signature}"


def _attacker_jwk_header(rsa_key: RSAKey, attacker: RSAKey) -> str:
    # "Verify me with the key I carry": signed by the attacker's own EC key.
    own = ECKey.generate_key("P-256")
    return sign(claims(), own, alg="ES256", kid="ec-1", jwk=own.as_dict(private=False))


ATTACKS: list[tuple[str, Callable[[RSAKey, RSAKey], str], str]] = [
    (
        "alg none, empty signature",
        lambda k, a: unsigned({"alg": "none", "typ": "JWT"}, claims()),
        "disallowed-alg",
    ),
    (
        "alg none, some signature",
        lambda k, a: unsigned({"alg": "none", "kid": "rsa-1"}, claims(), "c2ln"),
        "disallowed-alg",
    ),
    ("alg NONE", lambda k, a: unsigned({"alg": "NONE"}, claims(), "c2ln"), "disallowed-alg"),
    (
        "HS256 keyed with the RSA public key",
        lambda k, a: _hs256_with_public_key(k),
        "disallowed-alg",
    ),
    ("RS512 outside the list", lambda k, a: sign(claims(), k, alg="RS512"), "disallowed-alg"),
    ("expired", lambda k, a: sign(claims(exp=int(NOW) - 31), k), "expired"),
    ("missing exp", lambda k, a: sign(claims(exp=None), k), "missing-claim"),
    ("exp not a number", lambda k, a: sign(claims(exp="tomorrow"), k), "invalid-claim"),
    ("exp true", lambda k, a: sign(claims(exp=True), k), "invalid-claim"),
    ("nbf in the future", lambda k, a: sign(claims(nbf=int(NOW) + 31), k), "not-yet-valid"),
    ("wrong iss", lambda k, a: sign(claims(iss="https://evil.test"), k), "wrong-issuer"),
    ("missing iss", lambda k, a: sign(claims(iss=None), k), "wrong-issuer"),
    ("wrong aud", lambda k, a: sign(claims(aud="other-api"), k), "wrong-audience"),
    ("aud list without us", lambda k, a: sign(claims(aud=["a", "b"]), k), "wrong-audience"),
    ("missing aud", lambda k, a: sign(claims(aud=None), k), "wrong-audience"),
    ("missing sub", lambda k, a: sign(claims(sub=None), k), "missing-claim"),
    ("empty sub", lambda k, a: sign(claims(sub=""), k), "missing-claim"),
    (
        "jku header",
        lambda k, a: sign(claims(), k, jku="https://evil.test/jwks"),
        "forbidden-header",
    ),
    (
        "x5u header",
        lambda k, a: sign(claims(), k, x5u="https://evil.test/cert"),
        "forbidden-header",
    ),
    ("embedded jwk header", _attacker_jwk_header, "forbidden-header"),
    ("x5c header", lambda k, a: sign(claims(), k, x5c=["MIIB"]), "forbidden-header"),
    ("crit header", lambda k, a: sign(claims(), k, crit=["exp"], exp=1), "forbidden-header"),
    ("tampered payload", lambda k, a: _tampered(k), "bad-signature"),
    ("signed by another key, same kid", lambda k, a: sign(claims(), a), "bad-signature"),
    (
        "ES256 claimed for the RSA key",
        lambda k, a: unsigned({"alg": "ES256", "kid": "rsa-1"}, claims(), "c2ln"),
        "bad-signature",
    ),
    (
        "logout token used as bearer",
        lambda k, a: sign(claims(), k, typ="logout+jwt"),
        "wrong-type",
    ),
    ("two parts", lambda k, a: "abc.def", "malformed"),
    ("garbage header", lambda k, a: "!!!.e30.c2ln", "malformed"),
    ("payload is a list", lambda k, a: sign([1, 2], k), "malformed"),  # type: ignore[arg-type]
    ("oversized", lambda k, a: "a" * 20_000 + ".b.c", "malformed"),
]


@pytest.mark.parametrize(("attack", "reason"), [(f, r) for _, f, r in ATTACKS],
                         ids=[name for name, _, _ in ATTACKS])  # fmt: skip
async def test_attack_table(
    world: World,
    rsa_key: RSAKey,
    attacker_key: RSAKey,
    attack: Callable[[RSAKey, RSAKey], str],
    reason: str,
) -> None:
    assert await rejected(world, attack(rsa_key, attacker_key)) == reason


async def test_leeway_accepts_small_clock_skew(world: World, rsa_key: RSAKey) -> None:
    await world.validator.validate(sign(claims(exp=int(NOW) - 29, nbf=int(NOW) + 29), rsa_key))


async def test_token_expires_as_the_clock_moves(world: World, rsa_key: RSAKey) -> None:
    token = sign(claims(exp=int(NOW) + 60), rsa_key)
    await world.validator.validate(token)
    world.clock.advance(60 + 30)
    assert await rejected(world, token) == "expired"


async def test_validators_refuse_symmetric_and_none_algorithms() -> None:
    async with httpx.AsyncClient() as http:
        jwks = JWKSCache(JWKS_URI, http=http)
        for algorithms in (("HS256",), ("RS256", "none"), ()):
            with pytest.raises(ValueError):
                JWTValidator(issuer=ISSUER, audience=AUDIENCE, jwks=jwks, algorithms=algorithms)
            with pytest.raises(ValueError):
                LogoutTokenValidator(
                    issuer=ISSUER, audience=AUDIENCE, jwks=jwks, algorithms=algorithms
                )


# --- JWKS cache ----------------------------------------------------------------------------


async def test_unknown_kid_refetches_at_most_once_per_interval(
    world: World, rsa_key: RSAKey, rotated_key: RSAKey
) -> None:
    await world.validator.validate(sign(claims(), rsa_key))
    assert world.idp.calls == 1

    world.mono.advance(61)
    assert await rejected(world, sign(claims(), rotated_key)) == "unknown-kid"
    assert world.idp.calls == 2, "an unknown kid triggers one refetch"

    world.mono.advance(30)
    assert await rejected(world, sign(claims(), rotated_key)) == "unknown-kid"
    assert await rejected(world, sign(claims(), rotated_key, kid="made-up")) == "unknown-kid"
    assert world.idp.calls == 2, "no second fetch within the interval"

    # The provider rotates its key; after the interval the new kid is picked up.
    world.idp.keys = [rsa_key, rotated_key]
    world.mono.advance(30)
    result = await world.validator.validate(sign(claims(), rotated_key))
    assert result["sub"] == "alice"
    assert world.idp.calls == 3


async def test_concurrent_unknown_kids_share_one_fetch(
    world: World, rsa_key: RSAKey, rotated_key: RSAKey
) -> None:
    await world.validator.validate(sign(claims(), rsa_key))
    world.idp.keys = [rsa_key, rotated_key]
    world.mono.advance(61)
    token = sign(claims(), rotated_key)
    results = await asyncio.gather(*(world.validator.validate(token) for _ in range(20)))
    assert all(r["sub"] == "alice" for r in results)
    assert world.idp.calls == 2


async def test_first_concurrent_validations_share_one_fetch(world: World, rsa_key: RSAKey) -> None:
    token = sign(claims(), rsa_key)
    await asyncio.gather(*(world.validator.validate(token) for _ in range(20)))
    assert world.idp.calls == 1


async def test_provider_down_at_start_is_unavailable_not_invalid(
    world: World, rsa_key: RSAKey
) -> None:
    world.idp.status = 503
    token = sign(claims(), rsa_key)
    with pytest.raises(JWKSUnavailable):
        await world.validator.validate(token)
    with pytest.raises(JWKSUnavailable):
        await world.validator.validate(token)
    assert world.idp.calls == 1, "a down provider is not hammered"
    world.idp.status = 200
    world.mono.advance(60)
    assert (await world.validator.validate(token))["sub"] == "alice"


async def test_stale_keys_are_refreshed_and_kept_while_provider_is_down(
    world: World, rsa_key: RSAKey
) -> None:
    token = sign(claims(), rsa_key)
    await world.validator.validate(token)
    world.mono.advance(3600)
    world.idp.status = 500
    assert (await world.validator.validate(token))["sub"] == "alice"
    await _refreshed(world, calls=2)  # a stale set is refetched, behind the call
    assert (await world.validator.validate(token))["sub"] == "alice"
    assert world.idp.calls == 2, "and a failed refresh is not repeated at every call"


async def test_a_stale_set_serves_at_once_while_the_provider_hangs(
    world: World, rsa_key: RSAKey
) -> None:
    token = sign(claims(), rsa_key)
    await world.validator.validate(token)
    world.mono.advance(3600)
    world.idp.hang = asyncio.Event()
    try:
        async with asyncio.timeout(1):
            assert (await world.validator.validate(token))["sub"] == "alice"
            assert (await world.validator.validate(token))["sub"] == "alice"
    finally:
        world.idp.hang.set()
    await _refreshed(world, calls=2)


async def _refreshed(world: World, *, calls: int) -> None:
    """Wait (a bounded while) for the background refresh of the key set to have asked."""
    async with asyncio.timeout(2):
        while world.idp.calls < calls or world.jwks._keys.refreshing:
            await asyncio.sleep(0.001)


async def test_stale_set_drops_keys_the_provider_removed(
    world: World, rsa_key: RSAKey, ec_key: ECKey
) -> None:
    token = sign(claims(), rsa_key)
    await world.validator.validate(token)
    world.idp.keys = [ec_key]
    world.mono.advance(3600)
    await world.validator.validate(token)  # served from the copy; the refresh starts
    await _refreshed(world, calls=2)
    assert await rejected(world, token) == "unknown-kid"


async def test_symmetric_and_private_members_in_jwks_are_ignored(rsa_key: RSAKey) -> None:
    secret = OctKey.import_key(b"s" * 32, parameters={"kid": "hs"})
    with respx.mock() as router:
        router.get(JWKS_URI).respond(
            json={"keys": [secret.as_dict(private=True), rsa_key.as_dict(private=True)]}
        )
        async with httpx.AsyncClient() as http:
            jwks = JWKSCache(JWKS_URI, http=http)
            key = await jwks.get_key("rsa-1")
            assert not key.is_private
            with pytest.raises(InvalidToken) as caught:
                await jwks.get_key("hs")
            assert caught.value.reason == "unknown-kid"


async def test_token_without_kid_uses_the_only_key(rsa_key: RSAKey) -> None:
    public = {k: v for k, v in rsa_key.as_dict(private=False).items() if k != "kid"}
    with respx.mock() as router:
        router.get(JWKS_URI).respond(json={"keys": [public]})
        async with httpx.AsyncClient() as http:
            validator = JWTValidator(
                issuer=ISSUER,
                audience=AUDIENCE,
                jwks=JWKSCache(JWKS_URI, http=http),
                clock=lambda: NOW,
            )
            token = sign(claims(), rsa_key, kid=None)
            assert "kid" not in json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
            assert (await validator.validate(token))["sub"] == "alice"


async def test_key_alg_member_must_match_the_header(rsa_key: RSAKey) -> None:
    pinned = {**rsa_key.as_dict(private=False), "alg": "RS512"}
    with respx.mock() as router:
        router.get(JWKS_URI).respond(json={"keys": [pinned]})
        async with httpx.AsyncClient() as http:
            validator = JWTValidator(
                issuer=ISSUER,
                audience=AUDIENCE,
                jwks=JWKSCache(JWKS_URI, http=http),
                algorithms=("RS256", "RS512"),
                clock=lambda: NOW,
            )
            with pytest.raises(InvalidToken) as caught:
                await validator.validate(sign(claims(), rsa_key))
            assert caught.value.reason == "bad-signature"


# --- back-channel logout tokens ------------------------------------------------------------


def logout_claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "iat": int(NOW),
        "exp": int(NOW) + 120,
        "jti": "jti-1",
        "sub": "alice",
        "sid": "sid-1",
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


async def logout_rejected(world: World, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await world.logout.validate_logout_token(token)
    return caught.value.reason


async def test_valid_logout_token(world: World, rsa_key: RSAKey) -> None:
    token = sign(logout_claims(), rsa_key, typ="logout+jwt")
    assert await world.logout.validate_logout_token(token) == LogoutToken(
        sub="alice", sid="sid-1", jti="jti-1", iat=int(NOW)
    )


async def test_logout_token_with_only_sid_or_only_sub(world: World, ec_key: ECKey) -> None:
    only_sid = sign(logout_claims(jti="a", sub=None), ec_key, alg="ES256")
    only_sub = sign(logout_claims(jti="b", sid=None), ec_key, alg="ES256")
    assert await world.logout.validate_logout_token(only_sid) == LogoutToken(
        sub=None, sid="sid-1", jti="a", iat=int(NOW)
    )
    result = await world.logout.validate_logout_token(only_sub)
    assert (result.sub, result.sid) == ("alice", None)


async def test_logout_token_replay_is_rejected(world: World, rsa_key: RSAKey) -> None:
    token = sign(logout_claims(), rsa_key)
    await world.logout.validate_logout_token(token)
    assert await logout_rejected(world, token) == "replayed"
    # A different token reusing the jti is a replay too.
    assert await logout_rejected(world, sign(logout_claims(sid="x"), rsa_key)) == "replayed"


async def test_rejected_logout_token_does_not_burn_its_jti(world: World, rsa_key: RSAKey) -> None:
    assert await logout_rejected(world, sign(logout_claims(nonce="n"), rsa_key)) == (
        "forbidden-claim"
    )
    await world.logout.validate_logout_token(sign(logout_claims(), rsa_key))


LOGOUT_ATTACKS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("nonce present", {"nonce": "n-1"}, {}, "forbidden-claim"),
    ("events missing", {"events": None}, {}, "missing-claim"),
    ("events without logout event", {"events": {"urn:other": {}}}, {}, "missing-claim"),
    ("events as a list", {"events": [BACKCHANNEL_LOGOUT_EVENT]}, {}, "missing-claim"),
    ("logout event not an object", {"events": {BACKCHANNEL_LOGOUT_EVENT: 1}}, {}, "missing-claim"),
    ("neither sub nor sid", {"sub": None, "sid": None}, {}, "missing-claim"),
    ("sid not a string", {"sid": 7}, {}, "invalid-claim"),
    ("jti missing", {"jti": None}, {}, "missing-claim"),
    ("iat missing", {"iat": None}, {}, "missing-claim"),
    ("iat too old", {"iat": int(NOW) - 151, "exp": None}, {}, "too-old"),
    ("iat in the future", {"iat": int(NOW) + 31}, {}, "issued-in-future"),
    ("expired", {"iat": int(NOW) - 100, "exp": int(NOW) - 31}, {}, "expired"),
    ("wrong aud (the API audience)", {"aud": AUDIENCE}, {}, "wrong-audience"),
    ("wrong iss", {"iss": "https://evil.test"}, {}, "wrong-issuer"),
    ("typ JWT", {}, {"typ": "JWT"}, "wrong-type"),
    ("jku header", {}, {"jku": "https://evil.test/jwks"}, "forbidden-header"),
]


@pytest.mark.parametrize(("overrides", "header", "reason"), [c[1:] for c in LOGOUT_ATTACKS],
                         ids=[c[0] for c in LOGOUT_ATTACKS])  # fmt: skip
async def test_logout_token_attacks(
    world: World,
    rsa_key: RSAKey,
    overrides: dict[str, Any],
    header: dict[str, Any],
    reason: str,
) -> None:
    token = sign(logout_claims(**overrides), rsa_key, **header)
    assert await logout_rejected(world, token) == reason


async def test_logout_token_alg_none_is_rejected(world: World) -> None:
    token = unsigned({"alg": "none", "typ": "logout+jwt"}, logout_claims())
    assert await logout_rejected(world, token) == "disallowed-alg"


async def test_memory_replay_cache_forgets_after_ttl() -> None:
    clock = FakeClock(0.0)
    cache = MemoryReplayCache(ttl=300, clock=clock)
    assert await cache.remember("a") is True
    assert await cache.remember("a") is False
    clock.advance(301)
    assert await cache.remember("a") is True


@pytest.mark.redis
async def test_redis_replay_cache_is_shared_between_instances(
    redis_server: RedisServer,
) -> None:
    client = Redis.from_pool(BlockingConnectionPool.from_url(redis_server.url))
    try:
        one = RedisReplayCache(client, ttl=300, prefix="test:jti:")
        two = RedisReplayCache(client, ttl=300, prefix="test:jti:")
        assert await one.remember("jti-x") is True
        assert await two.remember("jti-x") is False
        ttl = await client.pttl("test:jti:jti-x")
        assert 295_000 < ttl <= 300_000
    finally:
        await client.flushdb()
        await client.aclose()


async def test_ed25519_eddsa_and_ps256_tokens_validate_when_allowed(
    world: World, rsa_key: RSAKey
) -> None:
    ed_key = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1", "use": "sig"})
    world.idp.keys = [rsa_key, ed_key]
    validator = JWTValidator(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks=world.jwks,
        clock=world.clock,
        algorithms=("Ed25519", "EdDSA", "PS256"),
    )
    assert (await validator.validate(sign(claims(), ed_key, alg="Ed25519")))["sub"] == "alice"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns when signing with "EdDSA" too
        legacy = sign(claims(), ed_key, alg="EdDSA")
    assert (await validator.validate(legacy))["sub"] == "alice"
    assert (await validator.validate(sign(claims(), rsa_key, alg="PS256")))["sub"] == "alice"
    with pytest.raises(InvalidToken):  # allowed by the key set, not by this validator
        await validator.validate(sign(claims(), rsa_key, alg="RS256"))
