from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, OKPKey, RSAKey

from tests.support.clock import FakeClock
from tests.support.dpop import ProofKey
from tests.support.sandbox_app import (
    ACME_RW,
    FLOWS_PATH,
    bearer,
    dev_settings,
    flow_body,
    mint,
    read_problem,
)
from tests.support.tokens import b64, b64json

BASE_URL = "http://sandbox.test"
FLOWS_URL = BASE_URL + FLOWS_PATH
ALGS = "ES256 RS256 PS256 EdDSA"
ROTATION = 30.0


class Caller:
    """A client holding a DPoP key and an access token bound to it, on the test's clock."""

    def __init__(self, client: httpx.AsyncClient, clock: FakeClock) -> None:
        self.client = client
        self.clock = clock
        self.key = ProofKey()
        self.token = mint(cnf=self.key.cnf(), now=clock.now)

    def proof(self, method: str, url: str, **changes: Any) -> str:
        changes.setdefault("access_token", self.token)
        changes.setdefault("now", self.clock.now)
        return self.key.proof(method, url, **changes)

    def headers(self, method: str, url: str, **changes: Any) -> dict[str, str]:
        return {"Authorization": f"DPoP {self.token}", "DPoP": self.proof(method, url, **changes)}

    async def request(
        self, method: str, url: str = FLOWS_URL, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        sent = self.headers(method, url) if headers is None else headers
        return await self.client.request(method, url, headers=sent, **kw)


@pytest.fixture
def caller(client: httpx.AsyncClient, clock: FakeClock) -> Caller:
    return Caller(client, clock)


def challenge(response: httpx.Response) -> tuple[str, dict[str, str]]:
    """The scheme and parameters of a ``WWW-Authenticate`` with one challenge."""
    scheme, _, rest = response.headers["www-authenticate"].partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', rest))


def assert_refused(response: httpx.Response, error: str, *secrets: str) -> str:
    """A 401 with a DPoP challenge naming ``error``; returns the problem's detail."""
    assert response.status_code == 401, response.text
    scheme, params = challenge(response)
    assert scheme == "DPoP"
    assert params["error"] == error
    assert params["algs"] == ALGS
    document = read_problem(response)
    assert document["type"].endswith("/authentication-required")
    assert params["error_description"] == document["detail"]
    for secret in secrets:
        assert secret not in response.text
        assert secret not in response.headers["www-authenticate"]
    return str(document["detail"])


async def test_a_bound_token_with_proofs_lists_creates_updates_and_deletes(
    caller: Caller,
) -> None:
    listed = await caller.request("GET")
    assert listed.status_code == 200, listed.text
    assert listed.json()["delivery_flows"] == []
    assert "dpop-nonce" not in listed.headers

    created = await caller.request("POST", json=flow_body())
    assert created.status_code == 201, created.text
    flow_url = BASE_URL + created.headers["location"]

    updated = await caller.client.put(
        flow_url,
        json=flow_body(name="renamed"),
        headers={**caller.headers("PUT", flow_url), "If-Match": created.headers["etag"]},
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["name"] == "renamed"

    fetched = await caller.request("GET", flow_url)
    assert fetched.json()["name"] == "renamed"

    deleted = await caller.client.delete(
        flow_url, headers={**caller.headers("DELETE", flow_url), "If-Match": '"2"'}
    )
    assert deleted.status_code == 204, deleted.text
    assert (await caller.request("GET", flow_url)).status_code == 404


async def test_a_bound_token_sent_as_bearer_is_refused(caller: Caller) -> None:
    response = await caller.client.get(FLOWS_URL, headers=bearer(caller.token))
    detail = assert_refused(response, "invalid_token", caller.token)
    assert "DPoP scheme" in detail
    # With a proof beside it, still: the scheme is what a stolen bearer token would use.
    headers = {**caller.headers("GET", FLOWS_URL), **bearer(caller.token)}
    assert_refused(await caller.client.get(FLOWS_URL, headers=headers), "invalid_token")


async def test_a_token_bound_to_a_client_certificate_is_not_a_bearer_token(
    caller: Caller,
) -> None:
    token = mint(
        cnf={"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}, now=caller.clock.now
    )
    response = await caller.client.get(FLOWS_URL, headers=bearer(token))
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "client certificate" in read_problem(response)["detail"]
    unbound = await caller.client.get(FLOWS_URL, headers=bearer(mint(now=caller.clock.now)))
    assert unbound.status_code == 200, unbound.text


async def test_a_proof_for_another_method_is_refused(caller: Caller) -> None:
    response = await caller.request("GET", headers=caller.headers("POST", FLOWS_URL))
    assert "htm" in assert_refused(response, "invalid_dpop_proof")


@pytest.mark.parametrize(
    "proof_url",
    [
        BASE_URL + "/v1/tenants/ten_globex/delivery-flows",
        "http://elsewhere.test" + FLOWS_PATH,
        "https://sandbox.test" + FLOWS_PATH,
        "http://sandbox.test:8080" + FLOWS_PATH,
        FLOWS_PATH,
    ],
)
async def test_a_proof_for_another_url_is_refused(caller: Caller, proof_url: str) -> None:
    response = await caller.request("GET", headers=caller.headers("GET", proof_url))
    proof = response.request.headers["dpop"]
    assert "htu" in assert_refused(response, "invalid_dpop_proof", proof)
    assert read_problem(response)["expected_htu"] == FLOWS_URL


@pytest.mark.parametrize(
    "htu",
    [
        "HTTP://Sandbox.TEST" + FLOWS_PATH,
        "http://sandbox.test:80" + FLOWS_PATH,
        BASE_URL + "/v1/tenants/ten%5facme/delivery-flows",
        FLOWS_URL + "?limit=5#top",
    ],
)
async def test_htu_is_compared_after_normalisation(caller: Caller, htu: str) -> None:
    response = await caller.request("GET", headers=caller.headers("GET", FLOWS_URL, htu=htu))
    assert response.status_code == 200, response.text


async def test_the_request_query_is_not_part_of_htu(caller: Caller) -> None:
    url = FLOWS_URL + "?limit=5"
    response = await caller.request("GET", url, headers=caller.headers("GET", FLOWS_URL))
    assert response.status_code == 200, response.text


async def test_a_replayed_proof_is_refused(caller: Caller) -> None:
    headers = caller.headers("GET", FLOWS_URL)
    assert (await caller.request("GET", headers=headers)).status_code == 200
    detail = assert_refused(await caller.request("GET", headers=headers), "invalid_dpop_proof")
    assert "used before" in detail
    # Same jti, new proof otherwise: still a replay.
    jti = json.loads(_payload(headers["DPoP"]))["jti"]
    again = caller.headers("GET", FLOWS_URL, jti=jti, iat=int(caller.clock.now) + 1)
    assert_refused(await caller.request("GET", headers=again), "invalid_dpop_proof")


async def test_a_stale_proof_is_refused(caller: Caller) -> None:
    fresh = caller.headers("GET", FLOWS_URL, now=caller.clock.now - 59)
    assert (await caller.request("GET", headers=fresh)).status_code == 200
    stale = caller.headers("GET", FLOWS_URL, now=caller.clock.now - 61)
    assert "too old" in assert_refused(
        await caller.request("GET", headers=stale), "invalid_dpop_proof"
    )


async def test_a_proof_from_the_future_is_refused(caller: Caller) -> None:
    skewed = caller.headers("GET", FLOWS_URL, now=caller.clock.now + 5)
    assert (await caller.request("GET", headers=skewed)).status_code == 200
    future = caller.headers("GET", FLOWS_URL, now=caller.clock.now + 30)
    assert "future" in assert_refused(
        await caller.request("GET", headers=future), "invalid_dpop_proof"
    )


async def test_a_proof_by_another_key_is_refused(caller: Caller) -> None:
    # A valid proof, but not by the key the token is bound to: a stolen token with the thief's key.
    thief = ProofKey()
    proof = thief.proof("GET", FLOWS_URL, access_token=caller.token, now=caller.clock.now)
    headers = {"Authorization": f"DPoP {caller.token}", "DPoP": proof}
    detail = assert_refused(await caller.request("GET", headers=headers), "invalid_token")
    assert "bound to another key" in detail


async def test_a_proof_whose_signature_does_not_verify_is_refused(caller: Caller) -> None:
    # The header names the holder's key; the signature is by another.
    header = {"jwk": caller.key.key.as_dict(private=False)}
    forged = ProofKey().proof(
        "GET", FLOWS_URL, access_token=caller.token, now=caller.clock.now, header=header
    )
    headers = {"Authorization": f"DPoP {caller.token}", "DPoP": forged}
    detail = assert_refused(await caller.request("GET", headers=headers), "invalid_dpop_proof")
    assert "signature" in detail


async def test_a_tampered_proof_is_refused(caller: Caller) -> None:
    header, _, signature = caller.proof("GET", FLOWS_URL).split(".")
    claims = json.loads(_payload(caller.proof("POST", FLOWS_URL)))
    tampered = f"{header}.{b64json({**claims, 'htm': 'GET'})}.{signature}"
    headers = {"Authorization": f"DPoP {caller.token}", "DPoP": tampered}
    assert "signature" in assert_refused(
        await caller.request("GET", headers=headers), "invalid_dpop_proof"
    )


async def test_a_proof_without_ath_is_refused(caller: Caller) -> None:
    headers = caller.headers("GET", FLOWS_URL, access_token=None)
    detail = assert_refused(await caller.request("GET", headers=headers), "invalid_dpop_proof")
    assert "no ath" in detail


async def test_a_proof_for_another_token_is_refused(caller: Caller) -> None:
    other_token = mint(cnf=caller.key.cnf(), now=caller.clock.now, sub="user-2")
    headers = caller.headers("GET", FLOWS_URL, access_token=other_token)
    detail = assert_refused(
        await caller.request("GET", headers=headers), "invalid_dpop_proof", other_token
    )
    assert "ath is not the hash" in detail


async def test_a_bound_token_without_a_proof_is_refused(caller: Caller) -> None:
    headers = {"Authorization": f"DPoP {caller.token}"}
    detail = assert_refused(await caller.request("GET", headers=headers), "invalid_dpop_proof")
    assert "DPoP header" in detail


async def test_two_proofs_are_refused(caller: Caller) -> None:
    headers = [
        ("Authorization", f"DPoP {caller.token}"),
        ("DPoP", caller.proof("GET", FLOWS_URL)),
        ("DPoP", caller.proof("GET", FLOWS_URL)),
    ]
    response = await caller.client.get(FLOWS_URL, headers=headers)
    assert "one DPoP header" in assert_refused(response, "invalid_dpop_proof")


async def test_an_unbound_token_with_the_dpop_scheme_is_refused(caller: Caller) -> None:
    unbound = mint(now=caller.clock.now)
    proof = caller.key.proof("GET", FLOWS_URL, access_token=unbound, now=caller.clock.now)
    response = await caller.client.get(
        FLOWS_URL, headers={"Authorization": f"DPoP {unbound}", "DPoP": proof}
    )
    assert "not bound" in assert_refused(response, "invalid_token", unbound, proof)
    # The same token as a bearer token keeps working.
    assert (await caller.client.get(FLOWS_URL, headers=bearer(unbound))).status_code == 200


async def test_an_api_key_with_the_dpop_scheme_is_refused(caller: Caller) -> None:
    key = ACME_RW["Authorization"].removeprefix("Bearer ")
    proof = caller.key.proof("GET", FLOWS_URL, access_token=key, now=caller.clock.now)
    response = await caller.client.get(
        FLOWS_URL, headers={"Authorization": f"DPoP {key}", "DPoP": proof}
    )
    assert "API keys" in assert_refused(response, "invalid_token", key)
    assert (await caller.client.get(FLOWS_URL, headers=ACME_RW)).status_code == 200


async def test_an_invalid_bound_token_is_refused_as_a_token(caller: Caller) -> None:
    expired = mint(cnf=caller.key.cnf(), now=caller.clock.now - 3600)
    proof = caller.key.proof("GET", FLOWS_URL, access_token=expired, now=caller.clock.now)
    response = await caller.client.get(
        FLOWS_URL, headers={"Authorization": f"DPoP {expired}", "DPoP": proof}
    )
    assert_refused(response, "invalid_token", expired)


def _hs256_with_the_public_key(caller: Caller) -> str:
    # The confusion attack: HMAC keyed with the public JWK the proof carries.
    public = caller.key.key.as_dict(private=False)
    header = b64json({"typ": "dpop+jwt", "alg": "HS256", "jwk": public})
    claims = json.loads(_payload(caller.proof("GET", FLOWS_URL)))
    signing_input = f"{header}.{b64json(claims)}"
    secret = json.dumps(public).encode()
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _unsigned(caller: Caller) -> str:
    return caller.proof("GET", FLOWS_URL, header={"alg": "none"})


@pytest.mark.parametrize("forge", [_unsigned, _hs256_with_the_public_key], ids=["none", "HS256"])
async def test_unsigned_and_symmetric_proofs_are_refused(
    caller: Caller, forge: Callable[[Caller], str]
) -> None:
    headers = {"Authorization": f"DPoP {caller.token}", "DPoP": forge(caller)}
    detail = assert_refused(await caller.request("GET", headers=headers), "invalid_dpop_proof")
    assert detail == "The DPoP proof's alg is not one of those in algs."


async def test_a_private_key_in_the_proof_header_is_refused(caller: Caller) -> None:
    header = {"jwk": caller.key.key.as_dict(private=True)}
    headers = caller.headers("GET", FLOWS_URL, header=header)
    detail = assert_refused(await caller.request("GET", headers=headers), "invalid_dpop_proof")
    assert "private key" in detail


@pytest.mark.parametrize(
    "header",
    [{"typ": "JWT"}, {"typ": None}, {"jwk": None}, {"jwk": {"kty": "oct", "k": "c2VjcmV0"}}],
    ids=["typ_jwt", "no_typ", "no_jwk", "symmetric_jwk"],
)
async def test_a_proof_must_be_typed_and_carry_a_public_key(
    caller: Caller, header: dict[str, Any]
) -> None:
    headers = caller.headers("GET", FLOWS_URL, header=header)
    assert_refused(await caller.request("GET", headers=headers), "invalid_dpop_proof")


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
async def test_a_proof_missing_a_required_claim_is_refused(caller: Caller, claim: str) -> None:
    headers = caller.headers("GET", FLOWS_URL, **{claim: None})
    assert_refused(await caller.request("GET", headers=headers), "invalid_dpop_proof")


@pytest.mark.parametrize("iat", [10**400, -(10**400), float("nan"), float("inf"), "now", True])
async def test_a_proof_whose_iat_is_not_a_time_is_refused(caller: Caller, iat: object) -> None:
    headers = caller.headers("GET", FLOWS_URL, iat=iat)
    detail = assert_refused(await caller.request("GET", headers=headers), "invalid_dpop_proof")
    assert "not a time" in detail


@pytest.mark.parametrize(
    "proof", ["not-a-jwt", "a.b.c", f"{b64json({'alg': 'ES256'})}.{b64(b'[' * 5000)}.c2ln"]
)
async def test_a_malformed_proof_is_refused(caller: Caller, proof: str) -> None:
    headers = {"Authorization": f"DPoP {caller.token}", "DPoP": proof}
    assert "well-formed" in assert_refused(
        await caller.request("GET", headers=headers), "invalid_dpop_proof"
    )


@pytest.mark.parametrize(
    ("alg", "make_key"),
    [
        ("RS256", lambda: RSAKey.generate_key(2048, private=True)),
        ("PS256", lambda: RSAKey.generate_key(2048, private=True)),
        ("EdDSA", lambda: OKPKey.generate_key("Ed25519", private=True)),
        ("ES256", lambda: ECKey.generate_key("P-256", private=True)),
    ],
)
async def test_proofs_in_each_configured_algorithm_are_accepted(
    client: httpx.AsyncClient, clock: FakeClock, alg: str, make_key: Callable[[], Any]
) -> None:
    key = ProofKey(make_key(), alg=alg)
    token = mint(cnf=key.cnf(), now=clock.now)
    proof = key.proof("GET", FLOWS_URL, access_token=token, now=clock.now)
    response = await client.get(
        FLOWS_URL, headers={"Authorization": f"DPoP {token}", "DPoP": proof}
    )
    assert response.status_code == 200, response.text


async def test_an_algorithm_left_out_of_the_settings_is_refused(
    make_client: Callable[..., httpx.AsyncClient], clock: FakeClock
) -> None:
    client = make_client(dev_settings(dpop_algorithms=("ES256",)))
    key = ProofKey(RSAKey.generate_key(2048, private=True), alg="PS256")
    token = mint(cnf=key.cnf(), now=clock.now)
    proof = key.proof("GET", FLOWS_URL, access_token=token, now=clock.now)
    response = await client.get(
        FLOWS_URL, headers={"Authorization": f"DPoP {token}", "DPoP": proof}
    )
    assert response.status_code == 401
    assert challenge(response)[1]["algs"] == "ES256"


async def test_without_credentials_the_challenge_offers_both_schemes(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(FLOWS_URL)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="zen-sandbox", DPoP realm="zen-sandbox", algs="{ALGS}"'
    )


# -- nonces ------------------------------------------------------------------------------------


@pytest.fixture
def nonce_caller(make_client: Callable[..., httpx.AsyncClient], clock: FakeClock) -> Caller:
    settings = dev_settings(dpop_nonce_required=True, dpop_nonce_rotation_seconds=ROTATION)
    return Caller(make_client(settings), clock)


async def test_a_required_nonce_is_given_then_accepted(nonce_caller: Caller) -> None:
    without = await nonce_caller.request("GET")
    assert_refused(without, "use_dpop_nonce")
    nonce = without.headers["dpop-nonce"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", nonce)

    accepted = await nonce_caller.request(
        "GET", headers=nonce_caller.headers("GET", FLOWS_URL, nonce=nonce)
    )
    assert accepted.status_code == 200, accepted.text
    # The nonce is still the current one: nothing new to hand out.
    assert "dpop-nonce" not in accepted.headers

    wrong = nonce_caller.headers("GET", FLOWS_URL, nonce="made-up")
    refused = await nonce_caller.request("GET", headers=wrong)
    assert_refused(refused, "use_dpop_nonce")
    assert refused.headers["dpop-nonce"] == nonce


async def test_nonces_rotate_and_the_previous_one_is_still_accepted(nonce_caller: Caller) -> None:
    nonce = (await nonce_caller.request("GET")).headers["dpop-nonce"]
    nonce_caller.clock.advance(ROTATION)

    previous = nonce_caller.headers("GET", FLOWS_URL, nonce=nonce)
    accepted = await nonce_caller.request("GET", headers=previous)
    assert accepted.status_code == 200, accepted.text
    fresh = accepted.headers["dpop-nonce"]
    assert fresh != nonce
    assert accepted.headers["cache-control"] == "no-store"

    with_fresh = nonce_caller.headers("GET", FLOWS_URL, nonce=fresh)
    assert (await nonce_caller.request("GET", headers=with_fresh)).status_code == 200

    nonce_caller.clock.advance(2 * ROTATION)
    stale = nonce_caller.headers("GET", FLOWS_URL, nonce=fresh)
    refused = await nonce_caller.request("GET", headers=stale)
    assert_refused(refused, "use_dpop_nonce")
    assert refused.headers["dpop-nonce"] not in {nonce, fresh}


async def test_nonces_are_not_asked_of_bearer_credentials(nonce_caller: Caller) -> None:
    assert (await nonce_caller.client.get(FLOWS_URL, headers=ACME_RW)).status_code == 200
    assert (await nonce_caller.client.get(FLOWS_URL, headers=bearer(mint()))).status_code == 200


# -- replay memory -----------------------------------------------------------------------------


async def test_the_replay_memory_is_bounded_and_refuses_rather_than_forgets(
    make_client: Callable[..., httpx.AsyncClient], clock: FakeClock
) -> None:
    caller = Caller(make_client(dev_settings(dpop_replay_cache_size=2)), clock)
    assert (await caller.request("GET")).status_code == 200
    clock.advance(10)
    assert (await caller.request("GET")).status_code == 200
    full = await caller.request("GET")
    assert full.status_code == 503
    assert read_problem(full)["type"].endswith("/service-unavailable")
    assert full.headers["retry-after"] == "50"
    # Once the first proof is past its lifetime it can be forgotten: room for one more.
    clock.advance(51)
    assert (await caller.request("GET")).status_code == 200


def _payload(token: str) -> bytes:
    segment = token.split(".")[1]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_the_proof_helper_signs_what_a_verifier_accepts() -> None:
    # Independent of the sandbox: the helper's proofs are ordinary ES256 JWS.
    from joserfc import jws

    key = ProofKey()
    proof = key.proof("POST", "https://api.test/x?y=1#z", access_token="tok", now=1_800_000_000)
    verified = jws.deserialize_compact(proof, key.key, algorithms=["ES256"])
    assert verified.headers()["typ"] == "dpop+jwt"
    assert "d" not in verified.headers()["jwk"]
    claims = json.loads(verified.payload)
    assert (claims["htm"], claims["htu"], claims["iat"]) == (
        "POST",
        "https://api.test/x",
        1_800_000_000,
    )
    assert claims["ath"] == b64(hashlib.sha256(b"tok").digest())


async def test_a_short_rsa_key_is_refused(caller: Caller) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    short = ProofKey(RSAKey(private, private), alg="RS256")
    proof = short.proof("GET", FLOWS_URL, access_token=caller.token, now=caller.clock.now)
    headers = {"Authorization": f"DPoP {caller.token}", "DPoP": proof}
    detail = assert_refused(await caller.request("GET", headers=headers), "invalid_dpop_proof")
    assert "2048" in detail
