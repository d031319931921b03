"""How the gateway proves to the provider that it is the client it says (RFC 6749 2.3).

Every call that authenticates the client (the code exchange, refresh, revocation, and the
``check-config --probe`` of the client's credentials) asks :class:`ClientAuthentication` for what
to send. Today that is ``client_secret_basic``: the id and secret in HTTP Basic. Another method
(a secret in the form, a signed assertion, a TLS client certificate) is another implementation
of the same small protocol, chosen in :func:`bff.auth.oidc.OIDCClient.for_settings`.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote

import httpx


class ClientAuthentication(Protocol):
    """What a token-endpoint call adds to prove the client."""

    client_id: str

    def auth(self) -> httpx.Auth:
        """The request's authentication."""
        ...

    @property
    def method(self) -> str:
        """The RFC 8414 name of the method, for messages (``client_secret_basic``)."""
        ...


class ClientSecretBasic:
    """``client_secret_basic``: the client id and secret as HTTP Basic credentials."""

    method = "client_secret_basic"

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self._secret = client_secret

    def __repr__(self) -> str:  # the secret must never reach a log line
        return f"ClientSecretBasic(client_id={self.client_id!r})"

    def auth(self) -> httpx.Auth:
        # RFC 6749 2.3.1: id and secret are form-encoded before Basic encoding.
        return httpx.BasicAuth(quote(self.client_id, safe=""), quote(self._secret, safe=""))
