"""The BFF-minted upstream JWT: exact claims, caching, verification with the published JWKS."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, KeySet, RSAKey

from bff.credentials import (
    SigningKeyError,
    UpstreamTokenMinter,
    load_signing_key,
)
from tests.support.clock import FakeClock

ISSUER = "http://127.0.0.1:8000/api/bff/v1"
AUDIENCE = "flows-api"
NOW = 1_800_000_000.0


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")

    def decode(segment: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * 3))
        return value

    return decode(header), decode(payload)


def verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Verify as the upstream would: only with the published key set."""
    return jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"]).claims  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def minter(clock: FakeClock) -> UpstreamTokenMinter:
    return UpstreamTokenMinter(issuer=ISSUER, audience=AUDIENCE, ttl=300, clock=clock)


def test_claims_are_exact(minter: UpstreamTokenMinter) -> None:
    token = minter.mint("alice", "ten_acme", ["write:delivery-flows", "read:delivery-flows"])
    header, claims = parts(token)
    assert header == {"alg": "ES256", "kid": minter.kid, "typ": "JWT"}
    jti = claims.pop("jti")
    assert isinstance(jti, str) and len(jti) >= 16
    assert claims == {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "tenant_id": "ten_acme",
        "scope": "read:delivery-flows write:delivery-flows",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 300,
    }


def test_signature_verifies_with_the_published_jwks(minter: UpstreamTokenMinter) -> None:
    token = minter.mint("alice", "ten_acme", ["read:delivery-flows"])
    assert verify(token, minter.jwks())["sub"] == "alice"


def test_other_minters_keys_do_not_verify(minter: UpstreamTokenMinter) -> None:
    other = UpstreamTokenMinter(issuer=ISSUER, audience=AUDIENCE)
    token = other.mint("alice", "ten_acme", ["read:delivery-flows"])
    public = minter.jwks()
    public["keys"][0]["kid"] = other.kid  # even when the kid matches
    with pytest.raises(BadSignatureError):
        verify(token, public)


def test_jwks_holds_only_public_material(minter: UpstreamTokenMinter) -> None:
    document = minter.jwks()
    assert len(document["keys"]) == 1
    key = document["keys"][0]
    assert "d" not in key
    assert set(key) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
    assert key["kid"] == minter.kid
    assert (key["kty"], key["crv"], key["use"], key["alg"]) == ("EC", "P-256", "sig", "ES256")
    json.dumps(document)


def test_token_is_reused_while_fresh(minter: UpstreamTokenMinter, clock: FakeClock) -> None:
    first = minter.mint("alice", "ten_acme", ["read:delivery-flows", "write:delivery-flows"])
    clock.advance(239)
    # Same scopes in another order and with a duplicate: same token.
    again = minter.mint(
        "alice", "ten_acme", ["write:delivery-flows", "read:delivery-flows", "read:delivery-flows"]
    )
    assert again == first


def test_token_is_renewed_a_minute_before_expiry(
    minter: UpstreamTokenMinter, clock: FakeClock
) -> None:
    first = minter.mint("alice", "ten_acme", ["read:delivery-flows"])
    clock.advance(240)
    second = minter.mint("alice", "ten_acme", ["read:delivery-flows"])
    assert second != first
    _, claims = parts(second)
    assert claims["iat"] == int(NOW) + 240
    assert claims["exp"] == int(NOW) + 540
    assert parts(first)[1]["jti"] != claims["jti"]


def test_short_lifetimes_renew_at_a_fifth_of_ttl(clock: FakeClock) -> None:
    minter = UpstreamTokenMinter(issuer=ISSUER, audience=AUDIENCE, ttl=60, clock=clock)
    first = minter.mint("alice", "ten_acme", ["read:delivery-flows"])
    clock.advance(47)
    assert minter.mint("alice", "ten_acme", ["read:delivery-flows"]) == first
    clock.advance(1)
    assert minter.mint("alice", "ten_acme", ["read:delivery-flows"]) != first


def test_tokens_differ_per_user_tenant_and_scopes(minter: UpstreamTokenMinter) -> None:
    tokens = {
        minter.mint("alice", "ten_acme", ["read:delivery-flows"]),
        minter.mint("bob", "ten_acme", ["read:delivery-flows"]),
        minter.mint("alice", "ten_globex", ["read:delivery-flows"]),
        minter.mint("alice", "ten_acme", ["read:delivery-flows", "write:delivery-flows"]),
        minter.mint("alice", "ten_acme", []),
    }
    assert len(tokens) == 5
    assert parts(minter.mint("alice", "ten_acme", []))[1]["scope"] == ""


def test_load_signing_key_from_pem(tmp_path: Path, clock: FakeClock) -> None:
    key = ECKey.generate_key("P-256")
    pem = tmp_path / "upstream-signing.pem"
    pem.write_bytes(key.as_pem(private=True))
    loaded = load_signing_key(pem)
    minter = UpstreamTokenMinter(issuer=ISSUER, audience=AUDIENCE, key=loaded, clock=clock)
    assert minter.kid == key.thumbprint()
    token = minter.mint("carol", "ten_globex", ["read:delivery-flows"])
    # The key set derived from the file's key verifies it: the same key survives restarts.
    restarted = UpstreamTokenMinter(issuer=ISSUER, audience=AUDIENCE, key=load_signing_key(pem))
    assert verify(token, restarted.jwks())["tenant_id"] == "ten_globex"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"not a key", "not a PEM EC key"),
        ("public", "public key"),
        ("p384", "P-256"),
        ("rsa", "not a PEM EC key"),
    ],
)
def test_load_signing_key_errors_name_the_file(
    tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / "key.pem"
    if content == "public":
        path.write_bytes(ECKey.generate_key("P-256").as_pem(private=False))
    elif content == "p384":
        path.write_bytes(ECKey.generate_key("P-384").as_pem(private=True))
    elif content == "rsa":
        path.write_bytes(RSAKey.generate_key(2048).as_pem(private=True))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(SigningKeyError, match=message) as caught:
        load_signing_key(path)
    assert str(path) in str(caught.value)


def test_minter_refuses_unsuitable_keys() -> None:
    with pytest.raises(SigningKeyError):
        UpstreamTokenMinter(
            issuer=ISSUER, audience=AUDIENCE, key=ECKey.generate_key("P-256", private=False)
        )
    with pytest.raises(ValueError):
        UpstreamTokenMinter(issuer=ISSUER, audience=AUDIENCE, ttl=0)
