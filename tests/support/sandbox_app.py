"""The sandbox as its tests drive it in-process.

- :func:`dev_settings`: the development seed data plus a test issuer (:data:`TEST_ISSUER`) whose
  tokens :func:`mint` signs (:data:`SIGNING_KEY`; :data:`OTHER_KEY` has the same ``kid``).
- :data:`ACME_RW`, :data:`ACME_RO`, :data:`GLOBEX_RW`: the development API keys as headers;
  :func:`bearer` makes one of any token.
- :func:`flow_body` and :func:`create_flow`: flows under :data:`FLOWS_PATH`.
- :func:`read_problem`: a problem+json answer, checked, as a dict.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
from joserfc import jwt
from joserfc.jwk import ECKey

import sandbox
from sandbox.config import SandboxSettings, TrustedIssuer

REPO = Path(__file__).resolve().parents[2]
DEV_CONFIG = REPO / "config" / "dev.toml"
TEST_ISSUER = "https://issuer.test"
TEST_AUDIENCE = "zen-backend"
TEST_KID = "test-key-1"

ACME_RW = {"Authorization": "Bearer zen_key_dev_acme_rw"}
ACME_RO = {"Authorization": "Bearer zen_key_dev_acme_ro"}
GLOBEX_RW = {"Authorization": "Bearer zen_key_dev_globex_rw"}

FLOWS_PATH = "/v1/tenants/ten_acme/delivery-flows"

SIGNING_KEY = ECKey.generate_key("P-256", parameters={"kid": TEST_KID}, private=True)
OTHER_KEY = ECKey.generate_key("P-256", parameters={"kid": TEST_KID}, private=True)


def public_jwks(*keys: ECKey) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


def mint(
    claims: dict[str, Any] | None = None,
    *,
    key: ECKey = SIGNING_KEY,
    kid: str | None = TEST_KID,
    now: float | None = None,
    **overrides: Any,
) -> str:
    """A token from the test issuer with sensible defaults; ``overrides`` replace claims."""
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE,
        "sub": "user-1",
        "iat": issued,
        "exp": issued + 300,
        "zen_tenants": {"ten_acme": ["read:delivery-flows", "write:delivery-flows"]},
    }
    payload.update(claims or {})
    payload.update(overrides)
    payload = {name: value for name, value in payload.items() if value is not None}
    header: dict[str, Any] = {"alg": "ES256"}
    if kid is not None:
        header["kid"] = kid
    return jwt.encode(header, payload, key)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def dev_settings(db: str = ":memory:", **changes: Any) -> SandboxSettings:
    """The dev seed data plus an inline-JWKS test issuer."""
    settings = sandbox.load_settings(DEV_CONFIG, db=db)
    issuer = TrustedIssuer(
        issuer=TEST_ISSUER,
        audience=TEST_AUDIENCE,
        algorithms=("ES256", "RS256"),
        jwks=public_jwks(SIGNING_KEY),
    )
    settings = msgspec.structs.replace(
        settings, trusted_issuers=(*settings.trusted_issuers, issuer)
    )
    return msgspec.structs.replace(settings, **changes)


def flow_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "stripe-to-orders",
        "cluster_id": "plane_dev_us_east_1",
        "source_id": "ing_stripe_prod",
        "destination_id": "dest_orders_api",
    }
    body.update(changes)
    return {name: value for name, value in body.items() if value is not ...}


async def create_flow(client: httpx.AsyncClient, **changes: Any) -> httpx.Response:
    response = await client.post(FLOWS_PATH, json=flow_body(**changes), headers=ACME_RW)
    assert response.status_code == 201, response.text
    return response


def read_problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    document = json.loads(response.content)
    assert document["status"] == response.status_code
    assert document["instance"] == response.headers["x-request-id"]
    assert document["type"].startswith("https://api.zen-mesh.io/errors/")
    return document
