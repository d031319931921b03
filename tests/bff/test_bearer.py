"""Bearer JWTs at the BFF: a provider-signed token works without CSRF; forgeries never pass.

Tokens are judged by real time (the validators' clock), so their dates are set from it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from bff.auth.jwt_validation import BACKCHANNEL_LOGOUT_EVENT
from tests.support.gateway import FLOWS, UP_FLOWS, assert_problem, upstream_flow
from tests.support.provider import CLIENT_ID, USERS, FakeProvider, attacker_key
from tests.support.signin import auth_settings, running_app
from tests.support.tokens import b64, b64json, sign, unsigned

EMPTY_PAGE = {"delivery_flows": [], "next_cursor": None}


def claims(provider: FakeProvider, **overrides: Any) -> dict[str, Any]:
    return provider.id_claims(USERS["alice"], None, **overrides)


def hs256_with_public_key(p: FakeProvider) -> str:
    public_pem = p.key.as_pem(private=False)
    signing_input = f"{b64json({'alg': 'HS256', 'kid': p.key.kid})}.{b64json(claims(p))}"
    return f"{signing_input}.{b64(hmac.digest(public_pem, signing_input.encode(), 'sha256'))}"


def tampered(p: FakeProvider) -> str:
    header, _, signature = p.bearer_token().split(".")
    more = claims(p, zen_tenants={"ten_acme": ["admin:delivery-flows"], "ten_globex": ["read:*"]})
    return f"{header}.{b64json(more)}.{signature}"


def without(p: FakeProvider, name: str) -> str:
    return p.signed({k: v for k, v in claims(p).items() if k != name})


ATTACKS: dict[str, Callable[[FakeProvider], str]] = {
    "alg-none": lambda p: unsigned({"alg": "none"}, claims(p)),
    "alg-none-with-signature": lambda p: unsigned({"alg": "none"}, claims(p), "c2ln"),
    "unsigned-rs256": lambda p: unsigned({"alg": "RS256", "kid": p.key.kid}, claims(p)),
    "hs256-with-the-rsa-public-key": hs256_with_public_key,
    "expired": lambda p: p.bearer_token(iat=int(p.clock()) - 7200, exp=int(p.clock()) - 3600),
    "not-yet-valid": lambda p: p.bearer_token(nbf=int(p.clock()) + 3600),
    "no-exp": lambda p: without(p, "exp"),
    "no-sub": lambda p: without(p, "sub"),
    "wrong-aud": lambda p: p.bearer_token(aud="another-api"),
    "wrong-iss": lambda p: p.bearer_token(iss="http://evil.test"),
    "jku-header": lambda p: p.signed(claims(p), jku="http://evil.test/jwks"),
    "x5u-header": lambda p: p.signed(claims(p), x5u="http://evil.test/cert.pem"),
    "embedded-jwk": lambda p: sign(
        claims(p), attacker_key(), jwk=attacker_key().as_dict(private=False)
    ),
    "unknown-kid": lambda p: sign(claims(p), attacker_key(), kid="not-a-provider-key"),
    "foreign-key-same-kid": lambda p: sign(claims(p), attacker_key()),
    "tampered-payload": tampered,
    "logout-token": lambda p: p.logout_token(sub="alice"),
    # The client id is an ID token's audience, never an access token's for this API.
    "client-id-audience-only": lambda p: p.bearer_token(aud=CLIENT_ID),
    "logout-event-typed-jwt": lambda p: p.bearer_token(events={BACKCHANNEL_LOGOUT_EVENT: {}}),
    "not-a-jwt": lambda p: "zen_key_dev_acme_rw",
}


@pytest.fixture
def backend(upstream: respx.MockRouter) -> respx.MockRouter:
    upstream.get(UP_FLOWS).respond(json=EMPTY_PAGE)
    upstream.post(UP_FLOWS).respond(201, json=upstream_flow(), headers={"ETag": '"1"'})
    return upstream


async def test_a_valid_provider_token_works_without_csrf_headers(
    backend: respx.MockRouter,
) -> None:
    async with running_app(backend) as h:
        token = h.provider.bearer_token("alice")
        auth = {"Authorization": f"Bearer {token}"}
        listed = await h.client.get(FLOWS, headers=auth)
        created = await h.client.post(
            FLOWS,
            headers=auth,
            json={"name": "n", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"},
        )
    assert listed.status_code == 200, listed.text
    assert created.status_code == 201, created.text
    # Relay mode forwards the caller's own token.
    sent = [c.request for c in backend.calls if c.request.url.path == UP_FLOWS]
    assert [r.headers["authorization"] for r in sent] == [f"Bearer {token}"] * 2


async def test_bearer_rights_come_from_its_claims(backend: respx.MockRouter) -> None:
    async with running_app(backend) as h:
        token = h.provider.bearer_token("bob", zen_tenants=USERS["bob"].tenants)
        response = await h.client.post(
            FLOWS,
            headers={"Authorization": f"Bearer {token}"},
            json={"name": "n", "sourceId": "ing_stripe_prod", "destinationId": "dest_orders_api"},
        )
    body = assert_problem(response, 403, "insufficient-scope")
    assert body["required_scope"] == "write:delivery-flows"
    assert len(backend.calls) == 0


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_forged_or_unfit_tokens_are_refused_before_the_upstream(
    backend: respx.MockRouter, attack: str
) -> None:
    async with running_app(backend) as h:
        token = ATTACKS[attack](h.provider)
        response = await h.client.get(FLOWS, headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "authentication-required")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert len(backend.calls) == 0
    assert token not in response.text


async def test_the_id_token_handed_out_at_logout_is_not_a_bearer_token(
    backend: respx.MockRouter,
) -> None:
    # Configured to, the end-session URL gives the browser the ID token (id_token_hint); it names
    # this BFF as its audience, but must not keep the signed-out user in once the session is gone.
    settings = auth_settings(oidc={"end_session_id_token_hint": True})
    async with running_app(backend, settings=settings) as h:
        browser = h.browser()
        await h.login(browser, "alice")
        logout = await browser.api("POST", "/api/bff/v1/auth/logout")
        query = parse_qs(urlsplit(logout.json()["endSessionUrl"]).query)
        (id_token,) = query["id_token_hint"]
        response = await h.client.get(FLOWS, headers={"Authorization": f"Bearer {id_token}"})
    assert_problem(response, 401, "authentication-required")
    assert not [c for c in backend.calls if c.request.url.path == UP_FLOWS]


@pytest.mark.parametrize(
    "header",
    ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer ", "Bearer    ", "Token abc", "eyJhbGciOi"],
)
async def test_a_malformed_authorization_header_is_a_401(
    backend: respx.MockRouter, header: str
) -> None:
    async with running_app(backend) as h:
        response = await h.client.get(FLOWS, headers={"Authorization": header})
    assert_problem(response, 401, "authentication-required")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert len(backend.calls) == 0


async def test_a_bad_bearer_token_is_not_rescued_by_a_session_cookie(
    backend: respx.MockRouter,
) -> None:
    async with running_app(backend) as h:
        browser = h.browser_with(await h.insert_session("alice"))
        response = await browser.api(
            "GET", FLOWS, headers={"Authorization": f"Bearer {ATTACKS['alg-none'](h.provider)}"}
        )
    assert_problem(response, 401, "authentication-required")
    assert len(backend.calls) == 0


async def test_unknown_kids_do_not_make_the_bff_hammer_the_provider(
    backend: respx.MockRouter,
) -> None:
    async with running_app(backend) as h:
        for n in range(5):
            forged = sign(claims(h.provider), attacker_key(), kid=f"made-up-{n}")
            response = await h.client.get(FLOWS, headers={"Authorization": f"Bearer {forged}"})
            assert response.status_code == 401
        valid = await h.client.get(
            FLOWS, headers={"Authorization": f"Bearer {h.provider.bearer_token()}"}
        )
        assert valid.status_code == 200
        assert h.provider.jwks.call_count == 1


async def test_when_the_provider_keys_cannot_be_fetched_the_answer_is_503(
    backend: respx.MockRouter,
) -> None:
    async with running_app(backend) as h:
        h.provider.jwks.side_effect = httpx.ConnectError("down")
        response = await h.client.get(
            FLOWS, headers={"Authorization": f"Bearer {h.provider.bearer_token()}"}
        )
    assert_problem(response, 503, "upstream-unavailable")
    assert "retry-after" in response.headers
    assert len(backend.calls) == 0


async def test_a_token_stops_working_when_the_clock_passes_its_expiry(
    backend: respx.MockRouter,
) -> None:
    async with running_app(backend) as h:
        auth = {"Authorization": f"Bearer {h.provider.bearer_token()}"}  # exp: now + 300 s
        assert (await h.client.get(FLOWS, headers=auth)).status_code == 200
        calls_while_valid = len(backend.calls)
        h.clock.advance(300 + 30)  # past exp and the 30 s leeway
        response = await h.client.get(FLOWS, headers=auth)
    assert_problem(response, 401, "authentication-required")
    assert len(backend.calls) == calls_while_valid


async def test_without_a_configured_audience_no_bearer_token_is_taken(
    backend: respx.MockRouter,
) -> None:
    settings = auth_settings(oidc={"bearer_audience": None})
    async with running_app(backend, settings=settings) as h:
        refused = await h.client.get(
            FLOWS, headers={"Authorization": f"Bearer {h.provider.bearer_token('alice')}"}
        )
    assert refused.status_code == 401
    assert "bearer_audience" in refused.json()["detail"]
    assert not [c for c in backend.calls if c.request.url.path == UP_FLOWS]
