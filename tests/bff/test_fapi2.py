"""``[oidc].profile = "fapi2"``: the FAPI 2.0 Security Profile as one setting. Everything it
requires of the client (pushed requests, PKCE S256, ``private_key_jwt`` or ``tls_client_auth``,
DPoP, the RFC 9207 ``iss`` check), and a refusal to start, naming the setting, with less."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from joserfc.jwk import ECKey

from bff.auth import OIDCClient
from bff.auth.token_endpoint import LoginError
from bff.settings import ConfigError
from tests.support.clock import FakeClock
from tests.support.gateway import API, LOGIN, make_settings
from tests.support.provider import CLIENT_ID, ISSUER, FakeProvider
from tests.support.signin import auth_settings, running_app

CLIENT_JWKS = f"{API}/.well-known/client-jwks.json"
FAPI2_METADATA = {
    "pushed_authorization_request_endpoint": f"{ISSUER}/par",
    "authorization_response_iss_parameter_supported": True,
    "token_endpoint_auth_methods_supported": ["private_key_jwt", "tls_client_auth"],
    "token_endpoint_auth_signing_alg_values_supported": ["ES256", "PS256"],
}


def _fapi2(tmp_path: Path, **oidc: Any) -> Any:
    key = ECKey.generate_key("P-256")
    path = tmp_path / "client.pem"
    path.write_bytes(key.as_pem(private=True))
    return auth_settings(
        oidc={
            "profile": "fapi2",
            "client_auth": "private_key_jwt",
            "client_key_file": str(path),
            "client_secret": "",
            "par": "auto",
            "dpop": True,
            **oidc,
        }
    )


def _provider(**metadata: Any) -> FakeProvider:
    provider = FakeProvider(FakeClock())
    provider.dpop = True
    provider.client_auth = "private_key_jwt"
    provider.metadata_extra = {**FAPI2_METADATA, **metadata}
    return provider


@pytest.mark.parametrize(
    ("oidc", "named"),
    [
        ({"client_auth": "client_secret_basic", "client_secret": "s"}, "client_auth = 'client_"),
        ({"client_auth": "client_secret_post", "client_secret": "s"}, "a shared secret is not"),
        ({"par": "never"}, "[oidc].par = 'never'"),
        ({"dpop": False}, "[oidc].dpop = false"),
    ],
    ids=["secret-basic", "secret-post", "no-par", "no-dpop"],
)
def test_anything_weaker_is_refused_by_name(
    tmp_path: Path, oidc: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match='profile = "fapi2"') as refused:
        _fapi2(tmp_path, **oidc)
    assert named in str(refused.value)


def test_every_weakness_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as refused:
        make_settings(oidc={"profile": "fapi2", "client_secret": "s"})
    assert all(s in str(refused.value) for s in ("client_auth", "par", "dpop"))


async def test_a_sign_in_pushes_proves_and_binds(
    upstream: respx.MockRouter, tmp_path: Path
) -> None:
    provider = _provider()
    async with running_app(upstream, settings=_fapi2(tmp_path), provider=provider) as harness:
        provider.client_jwks = (await harness.client.get(CLIENT_JWKS)).json()
        browser = harness.browser()
        start = await browser.get(LOGIN)
        carried = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["location"]).query).items()}
        callback_url = provider.authorize(start.headers["location"], extra={"iss": ISSUER})
        callback = await browser.get(callback_url)
    assert callback.status_code == 302, callback.text
    assert set(carried) == {"client_id", "request_uri"} and carried["client_id"] == CLIENT_ID
    assert [a["aud"] for a in provider.assertions] == [f"{ISSUER}/par", f"{ISSUER}/token"]
    at_par, at_token = provider.proofs
    assert at_par["jkt"] == at_token["jkt"] and provider.bound


async def test_a_request_sent_again_for_the_nonce_carries_a_new_client_assertion(
    upstream: respx.MockRouter, tmp_path: Path
) -> None:
    # The provider checks the client before the proof (as oidc-provider does), so the refused
    # request has spent its assertion's jti: sent again with the nonce, it needs a new one.
    provider = _provider()
    provider.dpop_nonce = "nonce-1"
    async with running_app(upstream, settings=_fapi2(tmp_path), provider=provider) as harness:
        provider.client_jwks = (await harness.client.get(CLIENT_JWKS)).json()
        browser = harness.browser()
        start = await browser.get(LOGIN)
        assert start.status_code == 302, start.text
        callback_url = provider.authorize(start.headers["location"], extra={"iss": ISSUER})
        callback = await browser.get(callback_url)
    assert callback.status_code == 302, callback.text
    assert [a["aud"] for a in provider.assertions] == [
        f"{ISSUER}/par",
        f"{ISSUER}/par",
        f"{ISSUER}/token",
    ]
    assert len({a["jti"] for a in provider.assertions}) == 3


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        ({"pushed_authorization_request_endpoint": None}, "pushed_authorization_request_endpoint"),
        ({"code_challenge_methods_supported": ["plain"]}, "code_challenge_methods_supported"),
        ({"dpop_signing_alg_values_supported": ["RS256"]}, "dpop_signing_alg_values_supported"),
        (
            {"authorization_response_iss_parameter_supported": False},
            "authorization_response_iss_parameter_supported",
        ),
    ],
    ids=["no-par", "no-s256", "no-es256-dpop", "no-iss"],
)
async def test_a_provider_without_what_the_profile_needs_is_refused_at_start(
    upstream: respx.MockRouter, tmp_path: Path, metadata: dict[str, Any], named: str
) -> None:
    provider = _provider(**metadata)
    with pytest.raises(ConfigError, match=named):
        async with running_app(upstream, settings=_fapi2(tmp_path), provider=provider):
            pass


@pytest.mark.parametrize("fapi2", [True, False])
async def test_an_answer_without_iss_fails_under_the_profile_even_when_the_metadata_is_silent(
    fapi2: bool,
) -> None:
    provider = _provider(authorization_response_iss_parameter_supported=False)
    async with httpx.AsyncClient(transport=provider.transport) as http:
        client = OIDCClient(
            issuer=ISSUER,
            client_id=CLIENT_ID,
            client_secret="",
            scopes=["openid"],
            http=http,
            clock=provider.clock,
            fapi2=fapi2,
        )
        if fapi2:
            with pytest.raises(LoginError, match="no iss"):
                await client.check_response_issuer(None)
        else:
            await client.check_response_issuer(None)
        with pytest.raises(LoginError, match="comes from issuer"):
            await client.check_response_issuer("https://other.example")
