"""How the gateway proves itself at the provider: ``[oidc].client_auth``."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
import respx
from cryptography import x509
from joserfc.jwk import ECKey, RSAKey

from bff import create_app
from bff.auth import provider_tls
from bff.auth.client_auth import ClientKeyError, load_client_keys, signing_algorithm
from bff.checks import write_self_signed
from bff.cli import main
from bff.settings import ConfigError, load_settings
from tests.support.clock import FakeClock
from tests.support.gateway import API, FLOWS, LOGOUT, UP_FLOWS
from tests.support.provider import CLIENT_ID, ISSUER, FakeProvider
from tests.support.signin import auth_settings, running_app

CLIENT_JWKS = f"{API}/.well-known/client-jwks.json"
LISTING = {"delivery_flows": [], "next_cursor": None}


def _keys_file(tmp_path: Path, *keys: ECKey | RSAKey) -> Path:
    path = tmp_path / "client.pem"
    path.write_bytes(b"".join(key.as_pem(private=True) for key in keys))
    return path


async def _sign_in_out(harness: Any) -> None:
    """A sign-in (code exchange), a refresh and a sign-out (revocation): each authenticates."""
    harness.provider.expires_in = 300
    raw_id = await harness.login(harness.browser(), "alice")
    harness.clock.advance(300 - 30)  # within the refresh margin
    assert (await harness.browser_with(raw_id).api("GET", FLOWS)).status_code == 200
    assert (await harness.browser_with(raw_id).api("POST", LOGOUT)).status_code == 200


async def test_private_key_jwt_signs_each_call_with_the_first_key_and_publishes_all(
    upstream: respx.MockRouter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    upstream.get(UP_FLOWS).respond(json=LISTING)
    signing, next_key = ECKey.generate_key("P-256"), RSAKey.generate_key(2048)
    settings = auth_settings(
        oidc={
            "client_auth": "private_key_jwt",
            "client_key_file": str(_keys_file(tmp_path, signing, next_key)),
            "client_secret": "",
        }
    )
    provider = FakeProvider(FakeClock())
    provider.client_auth = "private_key_jwt"
    provider.metadata_extra = {
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["PS256", "ES256"],
    }
    async with running_app(upstream, settings=settings, provider=provider) as harness:
        published = (await harness.client.get(CLIENT_JWKS)).json()
        provider.client_jwks = published  # what the provider fetches from jwks_uri
        await _sign_in_out(harness)

    assert [key["kid"] for key in published["keys"]] == [
        signing.thumbprint(),
        next_key.thumbprint(),
    ]
    assert all("d" not in key for key in published["keys"]), "no private member published"
    token_url, revoke_url = f"{ISSUER}/token", f"{ISSUER}/revoke"
    assert [a["aud"] for a in provider.assertions] == [token_url, token_url, revoke_url]
    assert {(a["alg"], a["kid"]) for a in provider.assertions} == {("ES256", signing.thumbprint())}
    assert len({a["jti"] for a in provider.assertions}) == 3, "a new assertion for every call"
    assert provider.revoked, "the refresh token was revoked, authenticated the same way"
    logged = caplog.text + repr([r.__dict__ for r in caplog.records])
    private = str(signing.as_dict(private=True)["d"])
    assert not [a for a in provider.assertions if a["raw"] in logged] and private not in logged


async def test_client_secret_post_sends_the_secret_in_the_form(
    upstream: respx.MockRouter,
) -> None:
    upstream.get(UP_FLOWS).respond(json=LISTING)
    provider = FakeProvider(FakeClock())
    provider.client_auth = "client_secret_post"  # refuses Basic
    provider.metadata_extra = {"token_endpoint_auth_methods_supported": ["client_secret_post"]}
    settings = auth_settings(oidc={"client_auth": "client_secret_post"})
    async with running_app(upstream, settings=settings, provider=provider) as harness:
        await _sign_in_out(harness)
        assert (await harness.client.get(CLIENT_JWKS)).json() == {"keys": []}
    assert provider.refresh_calls == 1 and provider.revoked


async def test_tls_client_auth_uses_the_mtls_aliases_and_names_only_the_client(
    upstream: respx.MockRouter, tmp_path: Path
) -> None:
    upstream.get(UP_FLOWS).respond(json=LISTING)
    config = tmp_path / "bff.toml"
    config.write_text(
        '[oidc]\nclient_auth = "tls_client_auth"\n'
        'client_key_file = "client.key"\nclient_cert_file = "client.pem"\n'
    )
    assert main(["keys", "--config", str(config)]) == 0
    provider = FakeProvider(FakeClock())
    provider.client_auth = "tls_client_auth"
    provider.metadata_extra = {
        "token_endpoint_auth_methods_supported": ["tls_client_auth"],
        "mtls_endpoint_aliases": {
            "token_endpoint": f"{ISSUER}/mtls/token",
            "revocation_endpoint": f"{ISSUER}/mtls/revoke",
        },
    }
    settings = auth_settings(
        oidc={
            "client_auth": "tls_client_auth",
            "client_key_file": str(tmp_path / "client.key"),
            "client_cert_file": str(tmp_path / "client.pem"),
            "client_secret": "",
        }
    )
    async with running_app(upstream, settings=settings, provider=provider) as harness:
        await _sign_in_out(harness)
    called = {str(call.request.url) for call in provider.router.calls}
    assert {f"{ISSUER}/mtls/token", f"{ISSUER}/mtls/revoke"} <= called
    assert not {f"{ISSUER}/token", f"{ISSUER}/revoke"} & called
    certificate = x509.load_pem_x509_certificate((tmp_path / "client.pem").read_bytes())
    assert certificate.subject.rfc4514_string() == "CN=flows-bff-dev"
    ssl.create_default_context().load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")


async def test_a_method_the_provider_does_not_take_is_refused_at_start(
    upstream: respx.MockRouter, tmp_path: Path
) -> None:
    provider = FakeProvider(FakeClock())
    provider.metadata_extra = {
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]
    }
    settings = auth_settings(
        oidc={
            "client_auth": "private_key_jwt",
            "client_key_file": str(_keys_file(tmp_path, ECKey.generate_key("P-256"))),
        }
    )
    app = create_app(settings, idp_transport=provider.transport, clock=provider.clock)
    with pytest.raises(ConfigError) as refused:
        async with app.router.lifespan_context(app):
            pass
    message = str(refused.value)
    assert "[oidc].client_auth: 'private_key_jwt'" in message
    assert "client_secret_basic, client_secret_post" in message


@pytest.mark.parametrize(
    ("oidc", "message"),
    [
        ({"client_auth": "private_key_jwt"}, "[oidc].client_key_file: required"),
        (
            {"client_auth": "tls_client_auth", "client_key_file": "k.pem"},
            "[oidc].client_cert_file: required",
        ),
        ({"client_auth": "client_secret_post", "client_secret": ""}, "client_secret: required"),
    ],
)
def test_each_method_names_what_it_lacks(oidc: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        auth_settings(oidc=oidc)


def test_the_assertion_algorithm_is_one_the_key_can_make_and_the_provider_takes() -> None:
    ec, rsa = ECKey.generate_key("P-256"), RSAKey.generate_key(2048)
    assert signing_algorithm(ec, ["RS256", "ES256"]) == "ES256"
    assert signing_algorithm(rsa, None) == "PS256"
    assert signing_algorithm(rsa, ["RS256"]) == "RS256"
    with pytest.raises(ClientKeyError, match=r"\['ES256'\]"):
        signing_algorithm(ec, ["RS256", "PS256"])


def test_a_client_key_file_without_a_private_key_is_refused(tmp_path: Path) -> None:
    public = tmp_path / "public.pem"
    public.write_bytes(ECKey.generate_key("P-256").as_pem(private=False))
    with pytest.raises(ClientKeyError, match="holds no private key"):
        load_client_keys(public)
    assert load_client_keys(_keys_file(tmp_path, ECKey.generate_key("P-384")))[0].key_type == "EC"


def test_bff_keys_says_what_to_register(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bff.toml"
    config.write_text('[oidc]\nclient_auth = "private_key_jwt"\nclient_key_file = "client.key"\n')
    assert main(["keys", "--config", str(config)]) == 0
    said = capsys.readouterr().out
    assert "jwks_uri http://127.0.0.1:8000/api/bff/v1/.well-known/client-jwks.json" in said
    assert (tmp_path / "client.key").stat().st_mode & 0o077 == 0
    (key,) = load_client_keys(tmp_path / "client.key")
    assert key.key_type == "EC" and CLIENT_ID not in said


def test_a_provider_under_a_private_ca_is_trusted_through_ca_file(tmp_path: Path) -> None:
    certificate = tmp_path / "ca.pem"
    key = tmp_path / "ca.key"
    key.write_bytes(ECKey.generate_key("P-256").as_pem(private=True))
    write_self_signed(certificate, key, "provider-ca")
    settings = auth_settings(oidc={"ca_file": str(certificate)})
    transport = provider_tls(settings.oidc)
    assert transport is not None
    context = transport._pool._ssl_context  # what httpx verifies the provider with
    assert context is not None
    assert context.cert_store_stats()["x509"] == 1, "that file's CA, not the system's"
    assert provider_tls(auth_settings().oidc) is None, "the system's CAs by default"
    config = tmp_path / "bff.toml"
    config.write_text('[oidc]\nclient_secret = "s"\nca_file = "missing.pem"\n')
    with pytest.raises(ConfigError, match=r"\[oidc\]\.ca_file: cannot read .*missing.pem"):
        load_settings(config, environ={})
