"""DPoP (RFC 9449), ``[oidc].dpop``: each session's tokens are bound to a key of its own, and
every call that presents or obtains them carries a fresh proof of that key.

The fake provider checks every proof it is sent (:meth:`FakeProvider._proof`) and binds what it
issues to the proof's key; the mocked backend checks the relayed proofs here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from joserfc import jws
from joserfc.jwk import JWKRegistry

from bff.auth.dpop import DPoPKey, Nonces, target_uri
from bff.settings import ConfigError
from tests.support.clock import FakeClock
from tests.support.gateway import (
    FLOWS,
    LOGIN,
    LOGOUT,
    UP_FLOWS,
    UPSTREAM,
    WHOAMI,
    assert_problem,
)
from tests.support.provider import ISSUER, FakeProvider
from tests.support.signin import auth_settings, running_app

NAVIGATION = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
PAR_ENDPOINT = {"pushed_authorization_request_endpoint": f"{ISSUER}/par"}
LIST_PAGE = {"delivery_flows": [], "next_cursor": None}


def _provider(**metadata: Any) -> FakeProvider:
    provider = FakeProvider(FakeClock())
    provider.dpop = True
    provider.metadata_extra = metadata
    return provider


def _settings(**oidc: Any) -> Any:
    return auth_settings(oidc={"dpop": True, **oidc})


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _claims(proof: str) -> tuple[dict[str, Any], str]:
    """A proof's claims (its signature checked against its own key) and that key's thumbprint."""
    compact = jws.extract_compact(proof.encode())
    header = dict(compact.headers())
    key = JWKRegistry.import_key(header["jwk"])
    jws.deserialize_compact(proof, key, algorithms=["ES256"])
    assert header["typ"] == "dpop+jwt" and header["alg"] == "ES256"
    assert "d" not in header["jwk"], "the proof carries the public key only"
    return json.loads(compact.payload), key.thumbprint()


def _ath(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


def _bound_backend(upstream: respx.MockRouter, provider: FakeProvider) -> list[dict[str, Any]]:
    """The backend's list route, refusing anything but a valid proof of the token's key; the
    proofs it accepted."""
    accepted: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        scheme, _, token = request.headers["authorization"].partition(" ")
        claims, jkt = _claims(request.headers["dpop"])
        assert scheme == "DPoP" and provider.bound[token] == jkt
        assert claims["htm"] == "GET" and claims["htu"] == f"{UPSTREAM}{UP_FLOWS}"
        assert claims["ath"] == _ath(token)
        accepted.append({**claims, "jkt": jkt, "token": token, "raw": request.headers["dpop"]})
        return httpx.Response(200, json=LIST_PAGE)

    upstream.get(UP_FLOWS).mock(side_effect=answer)
    return accepted


async def test_a_sign_in_binds_its_code_and_tokens_to_a_key_of_its_own(
    upstream: respx.MockRouter,
) -> None:
    provider = _provider()
    async with running_app(upstream, settings=_settings(), provider=provider) as harness:
        browser = harness.browser()
        start = await browser.get(LOGIN)
        jkt = _query(start.headers["location"])["dpop_jkt"]
        callback = await browser.get(provider.authorize(start.headers["location"]))
        assert callback.status_code == 302, callback.text
        await harness.login(harness.browser(), "bob")
    first, second = provider.proofs
    assert first["jkt"] == jkt, "the token request proves the key the code was bound to"
    assert first["htm"] == "POST" and first["htu"] == f"{ISSUER}/token"
    assert first["iat"] == int(provider.clock())
    assert "ath" not in first, "no access token goes with a token request"
    assert second["jkt"] != jkt, "every session has its own key"
    (access, *_) = provider.access_tokens
    assert provider.bound[access] == jkt


async def test_a_pushed_request_carries_the_proof_and_the_browser_no_thumbprint(
    upstream: respx.MockRouter,
) -> None:
    provider = _provider(**PAR_ENDPOINT)
    settings = _settings(par="always")
    async with running_app(upstream, settings=settings, provider=provider) as harness:
        browser = harness.browser()
        start = await browser.get(LOGIN)
        (pushed,) = provider.pushed.values()
        callback = await browser.get(provider.authorize(start.headers["location"]))
    assert callback.status_code == 302, callback.text
    assert set(_query(start.headers["location"])) == {"client_id", "request_uri"}
    at_par, at_token = provider.proofs
    assert at_par["htu"] == f"{ISSUER}/par" and pushed["dpop_jkt"] == at_par["jkt"]
    assert at_token["jkt"] == at_par["jkt"]


async def test_a_nonce_the_provider_asks_for_is_sent_once_more_and_remembered(
    upstream: respx.MockRouter,
) -> None:
    provider = _provider()
    provider.dpop_nonce = "nonce-1"
    async with running_app(upstream, settings=_settings(), provider=provider) as harness:
        await harness.login(harness.browser())
        assert provider.token.call_count == 2, "use_dpop_nonce, then the answer"
        await harness.login(harness.browser(), "bob")
        assert provider.token.call_count == 3, "the remembered nonce goes with the first request"
        provider.dpop_nonce = "nonce-2"
        await harness.login(harness.browser(), "carol", return_to="/")
    assert [proof["nonce"] for proof in provider.proofs] == ["nonce-1", "nonce-1", "nonce-2"]
    assert provider.token.call_count == 5


async def test_the_backend_gets_the_bound_token_with_a_proof_for_each_call(
    upstream: respx.MockRouter,
) -> None:
    provider = _provider()
    accepted = _bound_backend(upstream, provider)
    async with running_app(upstream, settings=_settings(), provider=provider) as harness:
        browser = harness.browser()
        await harness.login(browser)
        for _ in range(2):
            response = await browser.api("GET", FLOWS, params={"limit": "5"})
            assert response.status_code == 200, response.text
    assert len(accepted) == 2 and accepted[0]["jti"] != accepted[1]["jti"]
    assert accepted[0]["jkt"] == provider.proofs[0]["jkt"]


async def test_the_backends_nonce_challenge_is_answered_with_a_new_proof(
    upstream: respx.MockRouter,
) -> None:
    provider = _provider()
    seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        claims, _ = _claims(request.headers["dpop"])
        seen.append(claims)
        if claims.get("nonce") != "backend-nonce":
            return httpx.Response(
                401,
                json={"type": "about:blank", "title": "Unauthorized", "status": 401},
                headers={
                    "WWW-Authenticate": 'DPoP error="use_dpop_nonce", algs="ES256"',
                    "DPoP-Nonce": "backend-nonce",
                },
            )
        return httpx.Response(200, json=LIST_PAGE, headers={"DPoP-Nonce": "backend-nonce"})

    upstream.get(UP_FLOWS).mock(side_effect=answer)
    async with running_app(upstream, settings=_settings(), provider=provider) as harness:
        browser = harness.browser()
        await harness.login(browser)
        first = await browser.api("GET", FLOWS)
        second = await browser.api("GET", FLOWS)
    assert first.status_code == 200 and second.status_code == 200
    assert [claims.get("nonce") for claims in seen] == [None, "backend-nonce", "backend-nonce"]


async def test_a_refresh_proves_the_same_key_and_the_new_token_goes_upstream(
    upstream: respx.MockRouter,
) -> None:
    provider = _provider()
    provider.expires_in = 120
    accepted = _bound_backend(upstream, provider)
    async with running_app(upstream, settings=_settings(), provider=provider) as harness:
        browser = harness.browser()
        await harness.login(browser)
        harness.clock.advance(100)
        response = await browser.api("GET", FLOWS)
    assert response.status_code == 200, response.text
    sign_in, refresh = provider.proofs
    assert provider.refresh_calls == 1 and refresh["jkt"] == sign_in["jkt"]
    assert accepted[0]["token"] == provider.access_tokens[-1]


async def test_userinfo_is_asked_with_a_proof_of_the_bound_token(
    upstream: respx.MockRouter,
) -> None:
    provider = _provider()
    provider.userinfo_claims = {"sub": "alice", "zen_tenants": {"ten_acme": ["read:*"]}}
    provider.id_token_hook = lambda claims: provider.signed(
        {k: v for k, v in claims.items() if k != "zen_tenants"}
    )
    async with running_app(upstream, settings=_settings(), provider=provider) as harness:
        browser = harness.browser()
        await harness.login(browser)
        who = await browser.api("GET", WHOAMI)
    assert [(t["id"], t["scopes"]) for t in who.json()["tenants"]] == [("ten_acme", ["read:*"])]
    userinfo = provider.proofs[-1]
    assert userinfo["htm"] == "GET" and userinfo["htu"] == f"{ISSUER}/userinfo"
    assert userinfo["ath"] == _ath(provider.access_tokens[0])


async def test_a_provider_that_does_not_bind_the_tokens_fails_the_sign_in(
    upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    provider = _provider()
    provider.dpop_token_type = "Bearer"
    async with running_app(upstream, settings=_settings(), provider=provider) as harness:
        browser = harness.browser()
        start = await browser.get(LOGIN)
        callback = await browser.get(
            provider.authorize(start.headers["location"]), headers=NAVIGATION
        )
    assert callback.status_code == 400 and "could not be completed" in callback.text
    assert "did not bind the tokens to the DPoP key" in caplog.text


async def test_the_key_and_its_proofs_are_never_shown(
    upstream: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not in the logs, the audit trail, a problem body, ``/auth/session`` or a ``repr``."""
    caplog.set_level(logging.DEBUG)
    provider = _provider()
    relayed = _bound_backend(upstream, provider)
    async with running_app(upstream, settings=_settings(), provider=provider) as harness:
        browser = harness.browser()
        raw_id = await harness.login(browser)
        await browser.api("GET", FLOWS)
        who = await browser.api("GET", WHOAMI)
        upstream.get(UP_FLOWS).respond(401, headers={"WWW-Authenticate": 'DPoP error="x"'})
        refused = await browser.api("GET", FLOWS)
        session = await harness.app.state.signin.sessions.store.get(raw_id)
        await browser.api("POST", LOGOUT)
    assert session is not None and session.dpop_key and refused.status_code >= 500
    private = json.loads(session.dpop_key)["d"]
    secrets_used = [private, session.dpop_key, relayed[0]["raw"]]
    secrets_used += [proof["raw"] for proof in provider.proofs]
    shown = [who.text, refused.text, caplog.text, capsys.readouterr().out, repr(session)]
    assert not [s for s in secrets_used for text in shown if s in text]
    assert "dpop" not in who.text.lower()


@pytest.mark.parametrize(
    "authorization",
    ["DPoP some.bound.token", "dpop x"],
    ids=["dpop-scheme", "lowercase"],
)
async def test_api_callers_with_a_dpop_token_are_told_the_gateway_takes_bearer_tokens(
    upstream: respx.MockRouter, authorization: str
) -> None:
    async with running_app(upstream, settings=_settings(), provider=_provider()) as harness:
        response = await harness.client.get(FLOWS, headers={"Authorization": authorization})
    body = assert_problem(response, 401, "authentication-required")
    assert "bearer tokens only" in body["detail"]
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_a_bound_token_sent_as_bearer_is_refused(upstream: respx.MockRouter) -> None:
    async with running_app(upstream, settings=_settings(), provider=_provider()) as harness:
        bound = harness.provider.bearer_token(cnf={"jkt": DPoPKey.generate().thumbprint})
        unbound = harness.provider.bearer_token()
        refused = await harness.client.get(FLOWS, headers={"Authorization": f"Bearer {bound}"})
        upstream.get(UP_FLOWS).respond(json=LIST_PAGE)
        taken = await harness.client.get(FLOWS, headers={"Authorization": f"Bearer {unbound}"})
    assert "bearer tokens only" in assert_problem(refused, 401, "authentication-required")["detail"]
    assert taken.status_code == 200


async def test_a_provider_without_dpop_is_refused_at_start(upstream: respx.MockRouter) -> None:
    provider = _provider()
    provider.dpop = False
    with pytest.raises(ConfigError, match="dpop_signing_alg_values_supported: none"):
        async with running_app(upstream, settings=_settings(), provider=provider):
            pass


def test_a_proof_names_the_request_without_its_query_and_is_signed_by_its_key() -> None:
    key = DPoPKey.generate()
    proof = key.proof(
        "PATCH", "https://API.example:443/v1/x?cursor=1#f", access_token="at", nonce="n"
    )
    claims, jkt = _claims(proof)
    assert jkt == key.thumbprint
    assert (
        claims["htu"]
        == "https://API.example:443/v1/x"
        == target_uri("https://API.example:443/v1/x?q")
    )
    assert claims["htm"] == "PATCH" and claims["nonce"] == "n" and claims["ath"] == _ath("at")
    assert DPoPKey.from_jwk(key.to_jwk()).thumbprint == key.thumbprint
    assert key.thumbprint in repr(key) and key.to_jwk() not in repr(key)


def test_nonces_are_remembered_per_server() -> None:
    nonces = Nonces()
    assert not nonces.remember("https://a.example/token", {})
    assert nonces.remember("https://a.example/token", {"dpop-nonce": "n1"})
    assert nonces.get("https://A.example/userinfo") == "n1"
    assert nonces.get("https://b.example/token") is None
