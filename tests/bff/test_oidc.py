"""Reading token responses: when does the access token expire, so the BFF refreshes in time."""

from __future__ import annotations

import pytest

from bff.oidc import _token_set
from tests.bff.auth_fixtures import unsigned

NOW = 1_800_000_000.0


def _jwt(claims: dict[str, object]) -> str:
    return unsigned({"alg": "RS256"}, dict(claims), "c2lnbmF0dXJl")


@pytest.mark.parametrize(
    ("response", "expires_at"),
    [
        ({"access_token": "opaque", "expires_in": 300}, NOW + 300),
        ({"access_token": "opaque", "expires_in": "300"}, NOW + 300),
        ({"access_token": "opaque", "expires_at": NOW + 60}, NOW + 60),
        ({"access_token": _jwt({"exp": NOW + 900})}, NOW + 900),
        ({"access_token": _jwt({"exp": "soon"})}, None),
        ({"access_token": _jwt({"exp": True})}, None),
        ({"access_token": "not.a.jwt"}, None),
        ({"access_token": "opaque"}, None),
    ],
)
def test_expiry_from_expires_in_or_the_jwt(
    response: dict[str, object], expires_at: float | None
) -> None:
    assert _token_set(response, NOW).expires_at == expires_at
