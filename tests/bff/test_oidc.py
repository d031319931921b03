"""Reading token responses: when does the access token expire, so the BFF refreshes in time."""

from __future__ import annotations

import time

import httpx
import pytest
import respx

from bff.auth import OIDCClient
from bff.auth.token_endpoint import LoginError, _token_set
from tests.support.provider import provider_key
from tests.support.tokens import sign, unsigned

NOW = 1_800_000_000.0


def _jwt(claims: dict[str, object]) -> str:
    return unsigned({"alg": "RS256"}, dict(claims), "c2lnbmF0dXJl")


@pytest.mark.parametrize(
    ("response", "expires_at"),
    [
        ({"access_token": "opaque", "expires_in": 300}, NOW + 300),
        ({"access_token": "opaque", "expires_in": "300"}, NOW + 300),
        ({"access_token": "opaque", "expires_at": NOW + 60}, NOW + 60),
        ({"access_token": _jwt({"exp": NOW + 900})}, NOW + 900),
        ({"access_token": _jwt({"exp": "soon"})}, None),
        ({"access_token": _jwt({"exp": True})}, None),
        ({"access_token": "not.a.jwt"}, None),
        ({"access_token": "opaque"}, None),
    ],
)
def test_expiry_from_expires_in_or_the_jwt(
    response: dict[str, object], expires_at: float | None
) -> None:
    assert _token_set(response, NOW).expires_at == expires_at


async def test_tokens_name_the_issuer_exactly_as_the_providers_metadata_does() -> None:
    # Some providers (Auth0) spell their issuer with a trailing slash; the gateway is configured
    # with or without it, and compares tokens with the metadata's spelling, exactly.
    key = provider_key()
    issuer = "https://tenant.example.auth0.test/"
    router = respx.MockRouter(base_url=issuer.rstrip("/"), assert_all_called=False)
    router.get("/.well-known/openid-configuration").respond(
        json={
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}authorize",
            "token_endpoint": f"{issuer}oauth/token",
            "jwks_uri": f"{issuer}.well-known/jwks.json",
        }
    )
    router.get("/.well-known/jwks.json").respond(json={"keys": [key.as_dict(private=False)]})
    now = int(time.time())
    claims = {"sub": "alice", "aud": "client", "iat": now, "exp": now + 60, "nonce": "n"}
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as http:
        for configured in (issuer, issuer.rstrip("/")):
            client = OIDCClient(
                issuer=configured, client_id="client", client_secret="s", scopes=[], http=http
            )
            good = sign({**claims, "iss": issuer}, key)
            assert (await client.validate_id_token(good, nonce="n"))["sub"] == "alice"
            respelled = sign({**claims, "iss": issuer.rstrip("/")}, key)
            with pytest.raises(LoginError, match="wrong-issuer"):
                await client.validate_id_token(respelled, nonce="n")
