"""The URL paths the gateway serves, written once.

Routes are mounted under :data:`API_PREFIX`; the sign-in callback and the key set of the minted
upstream tokens are also named outside the app (the provider's registered redirect URI, the
backend's trusted issuers), so their full paths live here too. So does the shape of the ids a
path carries (tenant, cluster, flow), checked on the raw path at the edge and on ids in bodies.
"""

from __future__ import annotations

import re

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A tenant, cluster, flow, source or destination id: nothing a URL layer could reinterpret."""

API_PREFIX = "/api/bff/v1"
CALLBACK_PATH = API_PREFIX + "/auth/callback"
LOGIN_PATH = API_PREFIX + "/auth/login"
LOGOUT_PATH = API_PREFIX + "/auth/logout"
SESSIONS_PATH = API_PREFIX + "/auth/sessions"
JWKS_PATH = API_PREFIX + "/.well-known/jwks.json"
CLIENT_JWKS_PATH = API_PREFIX + "/.well-known/client-jwks.json"
"""The public keys of the gateway's ``private_key_jwt`` assertions, for the provider to fetch."""


def flow_path(tenant_id: str, cluster_id: str, flow_id: str) -> str:
    """Where the dashboard reads one flow (the ``Location`` of a create)."""
    return f"{API_PREFIX}/tenants/{tenant_id}/clusters/{cluster_id}/delivery-flows/{flow_id}"
