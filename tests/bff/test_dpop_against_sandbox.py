"""The gateway relaying DPoP-bound tokens to the real sandbox, in-process: the sandbox checks each
proof as a resource server does (``sandbox/dpop.py``), with nonces required."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

import sandbox
from bff import Principal
from bff.auth.dpop import DPoPKey
from tests.bff.test_against_sandbox import BODY, CountingASGITransport
from tests.support.gateway import FLOWS, RW, running_bff
from tests.support.sandbox_app import dev_settings, mint


@pytest.fixture
async def strict_sandbox() -> AsyncIterator[Starlette]:
    app = sandbox.create_app(dev_settings(dpop_nonce_required=True))
    async with app.router.lifespan_context(app):
        yield app


def _alice(key: DPoPKey, *, bound_to: DPoPKey | None = None) -> Principal:
    token = mint(cnf={"jkt": (bound_to or key).thumbprint}, sub="alice")
    return Principal(
        subject="alice",
        tenants={"ten_acme": RW},
        via="static",
        access_token=token,
        dpop_key=key,
    )


def _challenges(transport: CountingASGITransport) -> list[str]:
    return [r.headers["dpop"] for r in transport.requests]


def _payload(proof: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(proof.split(".")[1] + "=="))
    return claims


async def test_a_flows_life_with_a_bound_token_and_the_sandboxs_nonce(
    strict_sandbox: Starlette,
) -> None:
    transport = CountingASGITransport(strict_sandbox)
    async with running_bff(transport, principal=_alice(DPoPKey.generate())) as client:
        listed = await client.get(FLOWS)
        assert listed.status_code == 200, listed.text
        created = await client.post(FLOWS, json=BODY, headers={"Idempotency-Key": "dpop-1"})
        assert created.status_code == 201, created.text
        flow: dict[str, Any] = created.json()
        renamed = await client.put(
            created.headers["location"],
            json={**BODY, "name": "renamed"},
            headers={"If-Match": created.headers["etag"]},
        )
        assert renamed.status_code == 200, renamed.text
        deleted = await client.delete(
            created.headers["location"], headers={"If-Match": renamed.headers["etag"]}
        )
        assert deleted.status_code == 204, deleted.text
    assert flow["name"] == BODY["name"]
    assert all(r.headers["authorization"].startswith("DPoP ") for r in transport.requests)
    proofs = _challenges(transport)
    assert len(set(proofs)) == len(proofs), "a fresh proof for every request"
    nonces = [_payload(proof).get("nonce") for proof in proofs]
    # The first request is asked for the sandbox's nonce and sent again; later ones have it.
    assert nonces[0] is None and None not in nonces[1:], nonces
    assert transport.requests[0].url == transport.requests[1].url


async def test_a_token_bound_to_another_key_is_refused_by_the_sandbox(
    strict_sandbox: Starlette,
) -> None:
    transport = CountingASGITransport(strict_sandbox)
    principal = _alice(DPoPKey.generate(), bound_to=DPoPKey.generate())
    async with running_bff(transport, principal=principal) as client:
        refused = await client.get(FLOWS)
    assert refused.status_code >= 500, refused.text
    assert transport.requests, "the call reached the sandbox"


async def test_the_same_bound_token_as_bearer_is_refused_by_the_sandbox(
    strict_sandbox: Starlette,
) -> None:
    key = DPoPKey.generate()
    bound = _alice(key)
    as_bearer = Principal(
        subject="alice", tenants={"ten_acme": RW}, via="static", access_token=bound.access_token
    )
    async with running_bff(CountingASGITransport(strict_sandbox), principal=as_bearer) as client:
        refused = await client.get(FLOWS)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(strict_sandbox), base_url="http://sandbox.test"
    ) as direct:
        answer = await direct.get(
            "/v1/tenants/ten_acme/delivery-flows",
            headers={"Authorization": f"Bearer {bound.access_token}"},
        )
    assert refused.status_code >= 500
    assert (
        answer.status_code == 401 and 'error="invalid_token"' in answer.headers["www-authenticate"]
    )
