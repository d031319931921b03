from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from sandbox.config import TrustedIssuer
from tests.support.clock import FakeClock
from tests.support.sandbox_app import (
    ACME_RO,
    ACME_RW,
    FLOWS_PATH,
    GLOBEX_RW,
    OTHER_KEY,
    SIGNING_KEY,
    TEST_AUDIENCE,
    TEST_ISSUER,
    TEST_KID,
    bearer,
    create_flow,
    dev_settings,
    flow_body,
    mint,
    public_jwks,
    read_problem,
)
from tests.support.tokens import b64

ACME_FLOW_ID = "flow_01JD0000000000000000000000"

# (method, path template, needs write)
OPERATIONS = [
    ("GET", "/v1/tenants/{tid}/clusters", False),
    ("GET", "/v1/tenants/{tid}/ingesters", False),
    ("GET", "/v1/tenants/{tid}/destinations", False),
    ("GET", "/v1/tenants/{tid}/delivery-flows", False),
    ("GET", "/v1/tenants/{tid}/delivery-flows/{fid}", False),
    ("POST", "/v1/tenants/{tid}/delivery-flows", True),
    ("PUT", "/v1/tenants/{tid}/delivery-flows/{fid}", True),
    ("DELETE", "/v1/tenants/{tid}/delivery-flows/{fid}", True),
]


def jwt_acme(scopes: list[str]) -> dict[str, str]:
    return bearer(mint(zen_tenants={"ten_acme": scopes}))


CREDENTIALS: dict[str, Callable[[], dict[str, str]]] = {
    "acme_rw": lambda: ACME_RW,
    "acme_ro": lambda: ACME_RO,
    "globex_rw": lambda: GLOBEX_RW,
    "acme_rw_x_api_key": lambda: {"X-API-Key": "zen_key_dev_acme_rw"},
    "jwt_zen_tenants_rw": lambda: jwt_acme(["read:delivery-flows", "write:delivery-flows"]),
    "jwt_zen_tenants_ro": lambda: jwt_acme(["read:delivery-flows"]),
    "jwt_read_star": lambda: jwt_acme(["read:*"]),
    "jwt_admin": lambda: jwt_acme(["admin:delivery-flows"]),
    "jwt_write_only": lambda: jwt_acme(["write:delivery-flows"]),
    "jwt_no_scopes": lambda: jwt_acme([]),
    "jwt_tenant_id_scope_rw": lambda: bearer(
        mint(
            zen_tenants=None, tenant_id="ten_acme", scope="read:delivery-flows write:delivery-flows"
        )
    ),
    "jwt_tenant_id_scope_ro": lambda: bearer(
        mint(zen_tenants=None, tenant_id="ten_acme", scope="read:delivery-flows")
    ),
    "jwt_globex": lambda: bearer(
        mint(zen_tenants={"ten_globex": ["read:delivery-flows", "write:delivery-flows"]})
    ),
}

# What each credential may do in ten_acme: "rw", "r", "w" or "" (nothing: wrong tenant).
GRANTS_IN_ACME = {
    "acme_rw": "rw",
    "acme_ro": "r",
    "globex_rw": "",
    "acme_rw_x_api_key": "rw",
    "jwt_zen_tenants_rw": "rw",
    "jwt_zen_tenants_ro": "r",
    "jwt_read_star": "r",
    "jwt_admin": "rw",
    "jwt_write_only": "w",
    "jwt_no_scopes": "-",
    "jwt_tenant_id_scope_rw": "rw",
    "jwt_tenant_id_scope_ro": "r",
    "jwt_globex": "",
}


@pytest.mark.parametrize("credential", sorted(CREDENTIALS))
@pytest.mark.parametrize(("method", "template", "write"), OPERATIONS)
async def test_tenant_and_scope_matrix(
    client: httpx.AsyncClient, credential: str, method: str, template: str, write: bool
) -> None:
    flow_id = (await create_flow(client)).json()["id"]
    url = template.format(tid="ten_acme", fid=flow_id)
    body = flow_body(name="from-matrix") if method in {"POST", "PUT"} else None
    response = await client.request(method, url, json=body, headers=CREDENTIALS[credential]())
    grants = GRANTS_IN_ACME[credential]
    if grants == "":
        assert response.status_code == 403
        document = read_problem(response)
        assert document["type"].endswith("/tenant-forbidden")
        assert "ten_acme" in document["detail"]
    elif ("w" if write else "r") not in grants:
        assert response.status_code == 403
        document = read_problem(response)
        assert document["type"].endswith("/insufficient-scope")
        assert document["title"] == "Insufficient Scope"
        expected = "write:delivery-flows" if write else "read:delivery-flows"
        assert document["required_scope"] == expected
        assert expected in document["detail"]
    else:
        assert response.status_code in {200, 201, 204}, response.text


async def test_api_key_scope_error_reads_like_the_contract(client: httpx.AsyncClient) -> None:
    response = await client.post(FLOWS_PATH, json=flow_body(), headers=ACME_RO)
    document = read_problem(response)
    assert document["detail"] == "The API key does not have the write:delivery-flows scope."
    assert (await client.get(FLOWS_PATH, headers=ACME_RW)).json()["delivery_flows"] == []


async def test_globex_key_works_in_its_own_tenant(client: httpx.AsyncClient) -> None:
    body = {
        "name": "orders-to-erp",
        "cluster_id": "plane_globex_main",
        "source_id": "ing_globex_orders",
        "destination_id": "dest_globex_erp",
    }
    response = await client.post(
        "/v1/tenants/ten_globex/delivery-flows", json=body, headers=GLOBEX_RW
    )
    assert response.status_code == 201
    assert response.json()["tenant_id"] == "ten_globex"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer zen_key_unknown"},
        {"X-API-Key": "zen_key_unknown"},
        {"X-API-Key": ""},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "zen_key_dev_acme_rw"},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Bearer a.b"},
        {"Authorization": "Bearer ....."},
        {"Authorization": "Bearer e30.e30.e30"},
        {"Authorization": "Bearer zen_key_dev_acme_rw", "X-API-Key": "zen_key_dev_acme_ro"},
    ],
)
async def test_missing_or_invalid_credentials_are_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get(FLOWS_PATH, headers=headers)
    assert response.status_code == 401
    document = read_problem(response)
    assert document["type"].endswith("/authentication-required")
    assert response.headers["www-authenticate"].startswith("Bearer")


def _rsa_token_signed_hs256_with_public_key() -> str:
    # The classic confusion attack: sign with HMAC using the published public key as secret.
    import hashlib
    import hmac

    header = b64(json.dumps({"alg": "HS256", "kid": TEST_KID, "typ": "JWT"}).encode())
    payload = b64(json.dumps(_claims()).encode())
    secret = json.dumps(SIGNING_KEY.as_dict(private=False)).encode()
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def _claims(**changes: Any) -> dict[str, Any]:
    import time

    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE,
        "exp": now + 300,
        "zen_tenants": {"ten_acme": ["read:delivery-flows"]},
    }
    claims.update(changes)
    return claims


def _unsigned(alg: str) -> str:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(_claims()).encode())}."


JWT_ATTACKS: dict[str, Callable[[], str]] = {
    "alg_none": lambda: _unsigned("none"),
    "alg_None": lambda: _unsigned("None"),
    "hs256_with_public_key": _rsa_token_signed_hs256_with_public_key,
    "expired": lambda: mint(exp=1_000_000),
    "not_yet_valid": lambda: mint(nbf=4_000_000_000),
    "wrong_audience": lambda: mint(aud="someone-else"),
    "wrong_issuer": lambda: mint(iss="https://evil.test"),
    "no_exp": lambda: mint(exp=None),
    "no_aud": lambda: mint(aud=None),
    "no_iss": lambda: mint(iss=None),
    "unknown_kid": lambda: mint(kid="who-knows"),
    "signed_by_another_key": lambda: mint(key=OTHER_KEY),
    "no_tenant_claims": lambda: mint(zen_tenants=None),
    "zen_tenants_not_a_map": lambda: mint(zen_tenants=["ten_acme"]),
    "tampered_payload": lambda: _tamper(mint()),
}


def _tamper(token: str) -> str:
    header, _, signature = token.split(".")
    payload = b64(json.dumps(_claims(zen_tenants={"ten_acme": ["admin:delivery-flows"]})).encode())
    return f"{header}.{payload}.{signature}"


@pytest.mark.parametrize("attack", sorted(JWT_ATTACKS))
async def test_jwt_attacks_are_401(client: httpx.AsyncClient, attack: str) -> None:
    response = await client.get(FLOWS_PATH, headers=bearer(JWT_ATTACKS[attack]()))
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    read_problem(response)


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    "token",
    [
        f"{b64(json.dumps({'alg': 'ES256'}).encode())}.{b64(DEEP.encode())}.c2ln",
        f"{b64(DEEP.encode())}.{b64(json.dumps(_claims()).encode())}.c2ln",
    ],
    ids=["payload", "header"],
)
async def test_a_token_nested_too_deep_is_401_not_500(
    client: httpx.AsyncClient, token: str
) -> None:
    response = await client.get(FLOWS_PATH, headers=bearer(token))
    assert response.status_code == 401, response.text
    read_problem(response)


async def test_a_valid_jwt_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.get(FLOWS_PATH, headers=bearer(mint()))
    assert response.status_code == 200


async def test_rs256_tokens_are_accepted_from_an_rs256_issuer(
    make_client: Callable[..., httpx.AsyncClient],
) -> None:
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)
    issuer = TrustedIssuer(
        issuer="https://rsa.test",
        audience=TEST_AUDIENCE,
        algorithms=("RS256",),
        jwks={"keys": [rsa.as_dict(private=False)]},
    )
    client = make_client(dev_settings(trusted_issuers=(issuer,)))
    import time

    token = jwt.encode(
        {"alg": "RS256", "kid": "rsa-1"},
        {**_claims(), "iss": "https://rsa.test"},
        rsa,
    )
    assert (await client.get(FLOWS_PATH, headers=bearer(token))).status_code == 200
    es = mint(iss="https://rsa.test", now=time.time())
    assert (await client.get(FLOWS_PATH, headers=bearer(es))).status_code == 401


async def test_token_expiry_follows_the_injected_clock(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    token = mint(now=clock.now)
    assert (await client.get(FLOWS_PATH, headers=bearer(token))).status_code == 200
    clock.advance(3600)
    assert (await client.get(FLOWS_PATH, headers=bearer(token))).status_code == 401


class JwksServer:
    """A JWKS endpoint served through an httpx mock transport, counting fetches."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.fetches = 0
        self.fail = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.url == "https://idp.test/jwks.json"
        self.fetches += 1
        if self.fail:
            return httpx.Response(503)
        return httpx.Response(200, json=self.jwks)


@pytest.fixture
def jwks_server() -> JwksServer:
    return JwksServer(public_jwks(SIGNING_KEY))


@pytest.fixture
def remote_client(
    make_client: Callable[..., httpx.AsyncClient], jwks_server: JwksServer
) -> httpx.AsyncClient:
    issuer = TrustedIssuer(
        issuer=TEST_ISSUER, audience=TEST_AUDIENCE, jwks_uri="https://idp.test/jwks.json"
    )
    settings = msgspec.structs.replace(dev_settings(), trusted_issuers=(issuer,))
    return make_client(settings, jwks_transport=httpx.MockTransport(jwks_server.handler))


async def test_jwks_is_fetched_once_and_cached(
    remote_client: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    for _ in range(5):
        assert (await remote_client.get(FLOWS_PATH, headers=bearer(mint()))).status_code == 200
    assert jwks_server.fetches == 1


async def test_unknown_kid_refetches_at_most_once_a_minute(
    remote_client: httpx.AsyncClient, jwks_server: JwksServer, clock: FakeClock
) -> None:
    assert (await remote_client.get(FLOWS_PATH, headers=bearer(mint()))).status_code == 200
    new_key = ECKey.generate_key("P-256", parameters={"kid": "rotated"}, private=True)
    token = mint(key=new_key, kid="rotated", now=clock.now)
    for _ in range(10):
        assert (await remote_client.get(FLOWS_PATH, headers=bearer(token))).status_code == 401
    # Unknown kids within the first minute do not hammer the issuer.
    assert jwks_server.fetches == 1
    jwks_server.jwks = public_jwks(SIGNING_KEY, new_key)
    clock.advance(61)
    assert (await remote_client.get(FLOWS_PATH, headers=bearer(token))).status_code == 200
    assert jwks_server.fetches == 2


async def test_an_unreachable_jwks_is_401_not_500(
    remote_client: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    jwks_server.fail = True
    response = await remote_client.get(FLOWS_PATH, headers=bearer(mint()))
    assert response.status_code == 401
