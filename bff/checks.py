"""What ``bff check-config`` checks beyond the settings' own shape, and ``serve`` before it starts.

:func:`check_files` parses every key and certificate file the settings name, so that a file that
holds no key is a configuration error naming its key, not a traceback at start.
:func:`probe` (``check-config --probe``) contacts the identity provider and the upstream and says
of each check whether it passed.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import httpx

import upstream_client as uc

from .auth import OIDCClient
from .credentials import SigningKeyError, load_signing_key
from .paths import CALLBACK_PATH
from .settings import ConfigError, Settings


def check_files(settings: Settings) -> None:
    """Parse the key and certificate files; :class:`ConfigError` names the key of a bad one."""
    key_file = settings.internal_jwt.signing_key_file
    if settings.upstream.credential == "internal-jwt" and key_file:
        try:
            load_signing_key(key_file)
        except SigningKeyError as exc:
            raise ConfigError(f"[internal_jwt].signing_key_file: {exc}") from None
    upstream = settings.upstream
    if upstream.ca_file:
        try:
            ssl.create_default_context(cafile=upstream.ca_file)
        except (ssl.SSLError, ValueError) as exc:
            message = f"{upstream.ca_file} holds no CA certificate ({exc})"
            raise ConfigError(f"[upstream].ca_file: {message}") from None
    if upstream.cert_file and upstream.key_file:
        try:
            ssl.create_default_context().load_cert_chain(upstream.cert_file, upstream.key_file)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"[upstream].cert_file, key_file: not a certificate and its private key ({exc})"
            ) from None


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


async def probe(settings: Settings, *, timeout: float = 5.0) -> list[Check]:
    """Contact the provider (discovery, keys, the client's credentials) and the upstream."""
    checks: list[Check] = []
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
        oidc = OIDCClient.for_settings(settings.oidc, http)
        try:
            metadata = await oidc.discovery.metadata()
        except Exception as exc:
            checks.append(Check("provider discovery", False, str(exc)))
        else:
            checks.append(Check("provider discovery", True, f"issuer {metadata.issuer}"))
            try:
                jwks = await oidc.discovery.jwks()
                await jwks.refresh()
                checks.append(Check("provider keys", jwks.loaded, metadata.jwks_uri))
            except Exception as exc:
                checks.append(Check("provider keys", False, str(exc)))
            redirect_uri = settings.bff.public_origin.rstrip("/") + CALLBACK_PATH
            try:
                accepted = await oidc.tokens.check_client(redirect_uri)
            except Exception as exc:
                checks.append(Check("client credentials", False, str(exc)))
            else:
                detail = (
                    f"the token endpoint accepts client {settings.oidc.client_id!r}"
                    if accepted
                    else "the token endpoint refuses [oidc].client_id / client_secret"
                )
                checks.append(Check("client credentials", accepted, detail))
    async with uc.BackendClient(
        settings.upstream.base_url, timeout=uc.Timeout(connect=timeout, read=timeout)
    ) as client:
        try:
            healthy = await client.ping()
        except uc.UpstreamError as exc:
            checks.append(Check("upstream", False, f"{settings.upstream.base_url}: {exc}"))
        else:
            detail = f"{settings.upstream.base_url}/healthz " + ("answers" if healthy else "fails")
            checks.append(Check("upstream", healthy, detail))
    return checks
