"""What ``bff check-config`` checks beyond the settings' own shape, and ``serve`` before it starts.

:func:`check_files` parses every key and certificate file the settings name, so that a file that
holds no key is a configuration error naming its key, not a traceback at start;
:func:`write_missing_keys` (``bff keys``) writes the key files they name that do not exist yet.
:func:`probe` (``check-config --probe``) contacts the identity provider and the upstream and says
of each check whether it passed.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc.jwk import ECKey

import upstream_client as uc

from .auth import OIDCClient, provider_tls
from .auth.client_auth import ClientKeyError, load_client_keys
from .credentials import SigningKeyError, load_signing_key
from .paths import CALLBACK_PATH, CLIENT_JWKS_PATH
from .settings import ConfigError, Settings
from .state.sealing import KeyRingError, load_key_ring, write_new_ring, write_private


def check_files(settings: Settings) -> None:
    """Parse the key and certificate files; :class:`ConfigError` names the key of a bad one."""
    _check_client_credentials(settings)
    if ring := settings.sessions.encryption_keys_file:
        try:
            load_key_ring(ring)
        except KeyRingError as exc:
            raise ConfigError(f"[sessions].encryption_keys_file: {exc}") from None
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


def _check_client_credentials(settings: Settings) -> None:
    oidc = settings.oidc
    if oidc.client_auth == "private_key_jwt" and oidc.client_key_file:
        try:
            load_client_keys(oidc.client_key_file)
        except ClientKeyError as exc:
            raise ConfigError(f"[oidc].client_key_file: {exc}") from None
    if oidc.client_auth == "tls_client_auth" and oidc.client_cert_file and oidc.client_key_file:
        try:
            ssl.create_default_context().load_cert_chain(
                oidc.client_cert_file, oidc.client_key_file
            )
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"[oidc].client_cert_file, client_key_file: not a certificate and its private "
                f"key ({exc})"
            ) from None


def write_missing_keys(settings: Settings) -> list[str]:
    """Write each key file ``settings`` name that does not exist yet (never over one): the
    session key ring, the internal-JWT signing key, the client's key and certificate. Says what
    it wrote, and what to register at the provider, a line each."""
    written = []
    ring = settings.sessions.encryption_keys_file
    if ring and not Path(ring).exists():
        write_new_ring(Path(ring))
        written.append(f"wrote {ring}: the session key ring ([sessions].encryption_keys_file)")
    jwt_key = settings.internal_jwt.signing_key_file
    if jwt_key and not Path(jwt_key).exists():
        write_private(Path(jwt_key), ECKey.generate_key("P-256").as_pem(private=True))
        written.append(
            f"wrote {jwt_key}: the ES256 key that signs upstream tokens "
            "([internal_jwt].signing_key_file)"
        )
    return written + _write_client_credentials(settings)


def _write_client_credentials(settings: Settings) -> list[str]:
    """The client's key (and, for ``tls_client_auth``, a self-signed certificate) when missing,
    with what to register at the provider."""
    oidc = settings.oidc
    written = []
    key_file, cert_file = oidc.client_key_file, oidc.client_cert_file
    if oidc.client_auth == "private_key_jwt" and key_file and not Path(key_file).exists():
        write_private(Path(key_file), ECKey.generate_key("P-256").as_pem(private=True))
        jwks_uri = settings.bff.public_origin.rstrip("/") + CLIENT_JWKS_PATH
        written.append(
            f"wrote {key_file}: the key of the client's assertions ([oidc].client_key_file); "
            f"register at the provider: token_endpoint_auth_method private_key_jwt, jwks_uri "
            f"{jwks_uri}"
        )
    if oidc.client_auth == "tls_client_auth" and key_file and cert_file:
        if not Path(key_file).exists():
            write_private(Path(key_file), ECKey.generate_key("P-256").as_pem(private=True))
            written.append(
                f"wrote {key_file}: the client certificate's key ([oidc].client_key_file)"
            )
        if not Path(cert_file).exists():
            subject, thumbprint = write_self_signed(Path(cert_file), Path(key_file), oidc.client_id)
            written.append(
                f"wrote {cert_file}: a self-signed client certificate ([oidc].client_cert_file); "
                f"register at the provider: token_endpoint_auth_method tls_client_auth with "
                f"tls_client_auth_subject_dn {subject} (or, self-signed, the certificate itself; "
                f"its SHA-256 thumbprint x5t#S256 {thumbprint})"
            )
    return written


def write_self_signed(cert_path: Path, key_path: Path, client_id: str) -> tuple[str, str]:
    """A self-signed certificate for the key at ``key_path``, named after the client, valid a
    year; returns its subject (RFC 4514) and its SHA-256 thumbprint (base64url, x5t#S256)."""
    key = load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"[oidc].client_key_file: {key_path} is not an EC or RSA private key")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, client_id)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    digest = certificate.fingerprint(hashes.SHA256())
    return name.rfc4514_string(), base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


async def probe(settings: Settings, *, timeout: float = 5.0) -> list[Check]:
    """Contact the provider (discovery, keys, the client's credentials) and the upstream."""
    checks: list[Check] = []
    async with httpx.AsyncClient(
        transport=provider_tls(settings.oidc), timeout=timeout, trust_env=False
    ) as http:
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
            if oidc.dpop or oidc.fapi2:
                missing = oidc.missing(metadata)
                offered = "the provider offers what [oidc].dpop and [oidc].profile ask"
                checks.append(
                    Check("provider features", not missing, "; ".join(missing) or offered)
                )
            redirect_uri = settings.bff.public_origin.rstrip("/") + CALLBACK_PATH
            try:
                accepted = await oidc.tokens.check_client(redirect_uri)
            except Exception as exc:
                checks.append(Check("client credentials", False, str(exc)))
            else:
                method = oidc.tokens.method
                proof = "client_secret" if method.startswith("client_secret") else method
                detail = (
                    f"the token endpoint accepts client {settings.oidc.client_id!r} ({method})"
                    if accepted
                    else f"the token endpoint refuses [oidc].client_id / {proof}"
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
