"""A DPoP-bound credential (``DPoPToken``): ``Authorization: DPoP``, a fresh proof for every
attempt, and the backend's nonce asked for, answered and remembered (RFC 9449 7 and 9)."""

from __future__ import annotations

import httpx
import pytest
import respx

from tests.support.backend import FLOWS_PATH, TENANT, MakeClient, problem_response
from upstream_client import AuthenticationError, BackendClient, DPoPToken, RetryConfig

LISTING = {"delivery_flows": [], "next_cursor": None}


def _challenge() -> httpx.Response:
    """The backend asks for a proof with its nonce (RFC 9449 9)."""
    refusal = problem_response(401, "authentication-required")
    refusal.headers["WWW-Authenticate"] = 'DPoP error="use_dpop_nonce", algs="ES256"'
    refusal.headers["DPoP-Nonce"] = "n-1"
    return refusal


class Key:
    """Makes readable stand-ins for proofs, and keeps what each was made for."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, str | None, str | None]] = []

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        now: float | None = None,
    ) -> str:
        self.made.append((method, url, access_token, nonce))
        return f"proof-{len(self.made)}"


def _recorded(router: respx.Router, *answers: httpx.Response) -> list[httpx.Request]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    router.get(FLOWS_PATH).mock(side_effect=answer)
    return seen


async def test_each_attempt_carries_a_fresh_proof_of_the_token(
    router: respx.Router, make_client: MakeClient
) -> None:
    seen = _recorded(router, httpx.Response(503), httpx.Response(200, json=LISTING))
    key = Key()
    client: BackendClient = make_client(retries=RetryConfig(jitter=0.0, max_attempts=2))
    await client.list_flows(TENANT, token=DPoPToken("at-1", key))
    assert [r.headers["authorization"] for r in seen] == ["DPoP at-1", "DPoP at-1"]
    assert [r.headers["dpop"] for r in seen] == ["proof-1", "proof-2"]
    method, url, token, nonce = key.made[0]
    assert (method, token, nonce) == ("GET", "at-1", None) and url.endswith(FLOWS_PATH)


async def test_a_nonce_challenge_is_answered_once_and_the_nonce_remembered(
    router: respx.Router, make_client: MakeClient
) -> None:
    seen = _recorded(
        router,
        _challenge(),
        httpx.Response(200, json=LISTING, headers={"DPoP-Nonce": "n-2"}),
        httpx.Response(200, json=LISTING),
    )
    key = Key()
    client: BackendClient = make_client(retries=RetryConfig(jitter=0.0, max_attempts=1))
    await client.list_flows(TENANT, token=DPoPToken("at-1", key))
    await client.list_flows(TENANT, token=DPoPToken("at-1", key))
    assert len(seen) == 3, "one attempt answered twice, then one"
    assert [nonce for *_, nonce in key.made] == [None, "n-1", "n-2"]


async def test_a_second_challenge_is_the_callers_401(
    router: respx.Router, make_client: MakeClient
) -> None:
    seen = _recorded(router, _challenge(), _challenge())
    client: BackendClient = make_client()
    with pytest.raises(AuthenticationError):
        await client.list_flows(TENANT, token=DPoPToken("at-1", Key()))
    assert len(seen) == 2


async def test_bearer_tokens_carry_no_proof_and_the_token_is_never_shown(
    router: respx.Router, make_client: MakeClient
) -> None:
    seen = _recorded(router, httpx.Response(200, json=LISTING, headers={"DPoP-Nonce": "x"}))
    client: BackendClient = make_client()
    await client.list_flows(TENANT, token="zen_key_bearer")
    assert seen[0].headers["authorization"] == "Bearer zen_key_bearer"
    assert "dpop" not in seen[0].headers
    assert "at-secret" not in repr(DPoPToken("at-secret", Key()))
