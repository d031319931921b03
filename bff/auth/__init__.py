"""Who the caller is, and signing dashboard users in and out.

The rest of the gateway imports these names from here, never the modules behind them:

- the caller: :class:`Principal` and what it may do (:class:`Action`, :func:`authorize`,
  :func:`permissions`, :class:`Permissions`); :data:`Authenticator`, and the two of the API,
  :class:`BearerAuthenticator` and the session cookie's (built with the sign-in services);
- the sign-in side: :class:`OIDCClient` (the provider), :func:`open_sign_in` and
  :class:`SignIn` (the ``/auth/…`` services of one app) and their :data:`routes`;
- the pages a browser sees when a sign-in it navigated to fails (:func:`wants_page`,
  :func:`failure_page`, and their style sheet among :data:`routes`).

Inside, one module per job: ``login`` (login and callback), ``user_sessions`` (who am I, the
user's sessions, end one, end all), ``session_events`` (the session, live), ``logout``,
``backchannel``, ``pages``, and what they share:
``sign_outs`` (how sessions end), ``cookies``, ``authenticators``, ``csrf``, ``return_to``,
``principal``, ``user_agents``; the provider client in ``oidc`` over ``discovery`` (metadata
and keys), ``token_endpoint`` (the calls that answer the client) and ``client_auth`` (how the
client proves itself); ``jwt_validation`` for bearer and logout tokens.
"""

from __future__ import annotations

from . import endpoints, pages
from .authenticators import BearerAuthenticator, SessionAuthenticator
from .client_auth import provider_tls
from .endpoints import SignIn, open_sign_in
from .oidc import OIDCClient
from .pages import failure_page, wants_page
from .principal import (
    Action,
    Authenticator,
    Permissions,
    Principal,
    authorize,
    permissions,
    static_authenticator,
)

__all__ = [
    "Action",
    "Authenticator",
    "BearerAuthenticator",
    "OIDCClient",
    "Permissions",
    "Principal",
    "SessionAuthenticator",
    "SignIn",
    "authorize",
    "failure_page",
    "open_sign_in",
    "permissions",
    "provider_tls",
    "routes",
    "static_authenticator",
    "wants_page",
]

routes = [*endpoints.routes, *pages.routes]
"""The ``/auth/…`` routes, under :data:`bff.paths.API_PREFIX`."""
