"""How the gateway proves to the provider that it is the client it says (RFC 6749 2.3).

Every call that authenticates the client (the code exchange, refresh, revocation, and the
``check-config --probe`` of the client's credentials) asks the :class:`ClientAuthentication` of
``[oidc].client_auth`` what to send (:func:`client_authentication`):

- ``client_secret_basic`` (the default): the id and secret as HTTP Basic credentials;
- ``client_secret_post``: the id and secret in the form;
- ``private_key_jwt`` (RFC 7523, OpenID Connect Core 9): a signed assertion per call, with the
  first key of ``[oidc].client_key_file``; every key of that file is published at
  ``/api/bff/v1/.well-known/client-jwks.json`` (:data:`bff.paths.CLIENT_JWKS_PATH`), so the next
  key is listed there before it signs (put it second, then first, once the provider has fetched
  the list again: it may keep a copy as long as its ``max-age`` of 300 s, and oidc-provider, for
  one, refuses an assertion by a key it has not seen rather than fetch before then);
- ``tls_client_auth`` (RFC 8705): the client's certificate in the TLS handshake with the
  provider's endpoints (or their ``mtls_endpoint_aliases``), the id in the form.

Errors: :func:`load_client_keys` raises :class:`ClientKeyError` (a ``ValueError``) naming the
file and what is wrong with it. No key, assertion or secret is ever in a ``repr``.
"""

from __future__ import annotations

import secrets
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from ..settings import OidcSection

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_SECONDS = 60
"""How long an assertion is good for: one call, and the clock skew between us and the provider."""

ClientKey = ECKey | RSAKey
_NONE = httpx.Auth()
"""No HTTP authentication: the form proves the client."""


class ClientKeyError(ValueError):
    """The client key file cannot be used (missing, unreadable, not private keys in PEM)."""


class ClientAuthentication(Protocol):
    """What a call to one of the provider's endpoints adds to prove the client."""

    client_id: str

    @property
    def method(self) -> str:
        """The RFC 8414 name of the method, for messages (``client_secret_basic``)."""
        ...

    def credentials(
        self, endpoint: str, *, algorithms: Sequence[str] | None
    ) -> tuple[httpx.Auth, dict[str, str]]:
        """The request's HTTP authentication (``httpx.Auth()``: none) and the form fields it adds,
        for a call
        to ``endpoint``; ``algorithms``: what the provider says it takes for assertions."""
        ...


class ClientSecretBasic:
    """``client_secret_basic``: the client id and secret as HTTP Basic credentials."""

    method = "client_secret_basic"

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self._secret = client_secret

    def __repr__(self) -> str:  # the secret must never reach a log line
        return f"{type(self).__name__}(client_id={self.client_id!r})"

    def credentials(
        self, endpoint: str, *, algorithms: Sequence[str] | None
    ) -> tuple[httpx.Auth, dict[str, str]]:
        # RFC 6749 2.3.1: id and secret are form-encoded before Basic encoding.
        auth = httpx.BasicAuth(quote(self.client_id, safe=""), quote(self._secret, safe=""))
        return auth, {}


class ClientSecretPost(ClientSecretBasic):
    """``client_secret_post``: the client id and secret in the request's form."""

    method = "client_secret_post"

    def credentials(
        self, endpoint: str, *, algorithms: Sequence[str] | None
    ) -> tuple[httpx.Auth, dict[str, str]]:
        return _NONE, {"client_id": self.client_id, "client_secret": self._secret}


class PrivateKeyJwt:
    """``private_key_jwt``: a new assertion for every call, signed with ``keys[0]``.

    The assertion names the client as ``iss`` and ``sub``, the endpoint it is sent to as ``aud``
    (what RFC 7523 3 names first, and what Okta and Entra ID require), a fresh ``jti``, and lives
    :data:`ASSERTION_SECONDS`. Its algorithm is the first the key can make among those the
    provider lists (``token_endpoint_auth_signing_alg_values_supported``).
    """

    method = "private_key_jwt"

    def __init__(
        self,
        client_id: str,
        keys: Sequence[ClientKey],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ClientKeyError("private_key_jwt needs a client key")
        self.client_id = client_id
        self.keys = list(keys)
        self._clock = clock

    def __repr__(self) -> str:
        return f"PrivateKeyJwt(client_id={self.client_id!r}, kid={self.keys[0].thumbprint()!r})"

    def credentials(
        self, endpoint: str, *, algorithms: Sequence[str] | None
    ) -> tuple[httpx.Auth, dict[str, str]]:
        key = self.keys[0]
        alg = signing_algorithm(key, algorithms)
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": endpoint,
            "jti": secrets.token_urlsafe(24),
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
        }
        header = {"alg": alg, "kid": key.thumbprint(), "typ": "JWT"}
        assertion = jwt.encode(header, claims, key, algorithms=[alg])
        return _NONE, {
            "client_id": self.client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }


class TlsClientAuth:
    """``tls_client_auth``: the certificate is presented by the provider's HTTP client
    (:func:`provider_tls`); the form only names the client."""

    method = "tls_client_auth"

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id

    def __repr__(self) -> str:
        return f"TlsClientAuth(client_id={self.client_id!r})"

    def credentials(
        self, endpoint: str, *, algorithms: Sequence[str] | None
    ) -> tuple[httpx.Auth, dict[str, str]]:
        return _NONE, {"client_id": self.client_id}


_PREFERRED = {"EC": ("ES256", "ES384", "ES512"), "RSA": ("PS256", "RS256", "PS384", "RS384")}
_CURVE_ALGORITHM = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


def signing_algorithm(key: ClientKey, offered: Sequence[str] | None) -> str:
    """The algorithm an assertion with ``key`` is signed with, among ``offered`` (all when None).

    :raises ClientKeyError: when the provider takes none that the key can make.
    """
    usable = (_CURVE_ALGORITHM[key.curve_name],) if isinstance(key, ECKey) else _PREFERRED["RSA"]
    for alg in usable:
        if offered is None or alg in offered:
            return alg
    raise ClientKeyError(
        f"the provider takes client assertions signed with {sorted(offered or [])}; the client "
        f"key can sign with {list(usable)}"
    )


def load_client_keys(path: str | Path) -> list[ClientKey]:
    """The private keys of a PEM file, in order (the first signs); EC P-256/384/521 or RSA.

    :raises ClientKeyError: naming the file and what is wrong.
    """
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ClientKeyError(f"cannot read client key {path}: {exc.strerror}") from exc
    blocks = [
        b"-----BEGIN" + block
        for block in text.split(b"-----BEGIN")[1:]
        if b"PRIVATE KEY-----" in block.split(b"\n", 1)[0]
    ]
    if not blocks:
        raise ClientKeyError(f"client key {path} holds no private key in PEM")
    keys: list[ClientKey] = []
    for number, block in enumerate(blocks, start=1):
        try:
            private = load_pem_private_key(block, password=None)
        except (ValueError, TypeError) as exc:
            raise ClientKeyError(f"client key {path}, key {number}: not a private key") from exc
        if isinstance(private, ec.EllipticCurvePrivateKey):
            keys.append(ECKey.import_key(private))
        elif isinstance(private, rsa.RSAPrivateKey) and private.key_size >= 2048:
            keys.append(RSAKey.import_key(private))
        else:
            raise ClientKeyError(
                f"client key {path}, key {number}: use an EC key or an RSA key of 2048 bits or more"
            )
    return keys


def client_jwks(keys: Sequence[ClientKey]) -> dict[str, list[dict[str, Any]]]:
    """The public keys a provider fetches to check ``private_key_jwt`` assertions."""
    published = []
    for key in keys:
        public = dict(key.as_dict(private=False))
        public.update({"kid": key.thumbprint(), "use": "sig"})
        published.append(public)
    return {"keys": published}


def client_authentication(
    settings: OidcSection, *, clock: Callable[[], float] = time.time
) -> ClientAuthentication:
    """The method ``[oidc].client_auth`` names, with its secret or keys."""
    method = settings.client_auth
    if method == "client_secret_post":
        return ClientSecretPost(settings.client_id, settings.client_secret)
    if method == "private_key_jwt":
        assert settings.client_key_file is not None  # the settings require it
        keys = load_client_keys(settings.client_key_file)
        return PrivateKeyJwt(settings.client_id, keys, clock=clock)
    if method == "tls_client_auth":
        return TlsClientAuth(settings.client_id)
    return ClientSecretBasic(settings.client_id, settings.client_secret)


def provider_tls(settings: OidcSection) -> httpx.AsyncHTTPTransport | None:
    """The transport to the provider when it needs more than the defaults: the CAs of
    ``[oidc].ca_file`` instead of the system's, and with ``tls_client_auth`` the client's
    certificate. None otherwise."""
    mutual = settings.client_auth == "tls_client_auth"
    if not mutual and settings.ca_file is None:
        return None
    context = ssl.create_default_context(cafile=settings.ca_file)
    if mutual:
        assert settings.client_cert_file is not None and settings.client_key_file is not None
        context.load_cert_chain(settings.client_cert_file, settings.client_key_file)
    return httpx.AsyncHTTPTransport(verify=context)
