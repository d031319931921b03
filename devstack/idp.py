"""Development OpenID provider for ``bff dev``: oidc-provider-mock, configured and hardened.

Run it with ``python -m devstack.idp --config config/dev.toml [--port 8002]``. It serves on loopback
only (``--allow-non-loopback`` exists for the development container of ``docker-compose.yml``,
whose port is published on the host's loopback only), with the demo users of ``[[dev.users]]``
and the one confidential client of ``[oidc]``.

What the mock gives as it is: discovery, the authorize page (a form whose ``sub`` field takes
the user name), the token endpoint, userinfo, JWKS (one RS256 key, new at every start) and a
dummy end-session page. What this module adds on top, because the BFF relies on it:

- the issuer is pinned: requests must name it in ``Host`` (no DNS rebinding, stable ``iss``);
- only the configured client may log in, with its secret over ``client_secret_basic`` and its
  registered redirect URIs;
- PKCE with ``S256`` is required and checked at the token endpoint (the mock ignores PKCE);
  authorization codes expire after a minute (the mock's never do);
- a ``nonce`` is required;
- Deny on the authorize page answers ``access_denied`` with the request's ``state``, as
  RFC 6749 4.1.2.1 says (the mock leaves ``state`` out);
- refresh tokens rotate: each one is good for exactly one refresh (the mock keeps them valid
  forever); a replayed one gets ``invalid_grant`` and revokes the token that replaced it, as
  providers with reuse detection do, so a BFF that refreshes twice loses the login;
- the ID token names its signing key (``kid``);
- ``/userinfo`` answers an unknown or revoked token with 401 (the mock says 400);
- claims and clients cannot be changed over HTTP (the mock's ``PUT /users/…`` and dynamic
  client registration are switched off);
- token revocation (RFC 7009) at ``/oauth2/revoke``, announced in discovery;
- access tokens are RS256 JWTs (RFC 9068 shape) signed with the key published at ``/jwks``,
  carrying ``zen_tenants`` and ``scope``, so that credential mode ``relay`` can be tried;
- ``post_logout_redirect_uri`` of end-session must stay on the origin of a redirect URI;
- its pages (sign in, sign out, errors) are this package's templates with a style sheet it
  serves itself, under a Content-Security-Policy: they look right offline and load nothing from
  elsewhere (the mock's link a stylesheet on a CDN);
- a shortcut for trying the gateway from a terminal: the client may ask for a demo user's
  access token with ``grant_type=password`` (the password is the user's name), so that ``curl``
  can call the gateway with a bearer token. Development only, like everything here.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
import tomllib
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import flask
import jinja2
import msgspec
import werkzeug.serving
from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.wrappers import Response as WerkzeugResponse

from bff.paths import CALLBACK_PATH
from bff.settings import DEFAULT_CONFIG, DEV_PROVIDER_PORT, LOOPBACK, ConfigError, load_settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "ACCESS_TOKEN_AUDIENCE",
    "ACCESS_TOKEN_LIFETIME",
    "CODE_LIFETIME_SECONDS",
    "DevUser",
    "create_idp_app",
    "load_dev_users",
    "main",
]

_logger = logging.getLogger(__name__)

ACCESS_TOKEN_LIFETIME = timedelta(hours=1)
"""Lifetime of access and ID tokens (the mock uses one value for both)."""

ACCESS_TOKEN_AUDIENCE = "zen-backend"
"""Audience of access tokens besides the client id: the backend, for credential mode ``relay``."""

CODE_LIFETIME_SECONDS = 60.0
"""How long an authorization code can be exchanged (the mock's codes never expire)."""

_PKCE_VALUE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_MOCK = "oidc-provider-mock"


class DevUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A demo login: the subject typed into the provider's form, and the claims it gets."""

    sub: str
    name: str
    email: str
    zen_tenants: dict[str, list[str]] | None = None
    """Unset: the user's tokens carry no tenants claim at all, as for someone not yet given
    access."""

    def claims(self) -> dict[str, object]:
        """Claims for the ID token and userinfo (name and email need scopes profile, email)."""
        claims: dict[str, object] = {
            "name": self.name,
            "email": self.email,
            "email_verified": True,
        }
        if self.zen_tenants is not None:
            claims["zen_tenants"] = {
                tenant: list(scopes) for tenant, scopes in self.zen_tenants.items()
            }
        return claims


def load_dev_users(config_path: str | os.PathLike[str]) -> list[DevUser]:
    """Read the ``[[dev.users]]`` tables of a TOML config file (ValueError if malformed)."""
    with Path(config_path).open("rb") as fh:
        raw = tomllib.load(fh)
    try:
        return msgspec.convert(raw.get("dev", {}).get("users", []), list[DevUser])
    except msgspec.ValidationError as exc:
        raise ValueError(f"{config_path}: [[dev.users]]: {exc}") from exc


@dataclass
class _ProviderState:
    """What this module tracks beside the mock's own storage, shared by the request threads."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    lock: threading.Lock = field(default_factory=threading.Lock)
    clock: Callable[[], float] = time.monotonic
    code_challenges: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Authorization code -> (PKCE challenge, when the code was issued)."""
    refresh_in_use: set[str] = field(default_factory=set)
    rotated: dict[str, str] = field(default_factory=dict)
    """Refresh token -> the one that replaced it, to recognise a replay of a used token."""

    @property
    def logout_origins(self) -> frozenset[str]:
        return frozenset(_origin(uri) for uri in self.redirect_uris)


def create_idp_app(
    users: Iterable[DevUser],
    *,
    client_id: str,
    client_secret: str,
    redirect_uris: Sequence[str],
    issuer: str = f"http://{LOOPBACK}:{DEV_PROVIDER_PORT}",
    clock: Callable[[], float] = time.monotonic,
) -> flask.Flask:
    """Build the development provider as a Flask (WSGI) app; no server is started.

    ``issuer`` is the only origin the app answers to: a request whose ``Host`` names anything
    else gets 421, so the ``iss`` of every document and token equals ``issuer``. ``clock``
    (seconds) times authorization codes, which are good for :data:`CODE_LIFETIME_SECONDS`.
    """
    if not redirect_uris:
        raise ValueError("at least one redirect URI is required")
    users = list(users)
    state = _ProviderState(client_id, client_secret, tuple(redirect_uris), clock=clock)

    # The mock's templates live in its package; naming the app after it lets Flask find them.
    app = flask.Flask("oidc_provider_mock")
    app.config["OAUTH2_ACCESS_TOKEN_GENERATOR"] = _access_token_generator(issuer, client_id)
    # authlib installs an "always show" filter for its deprecations when first imported; import
    # it before the filter below so that ours comes first.
    import authlib.deprecate  # noqa: F401

    with warnings.catch_warnings():
        # The mock still uses authlib's deprecated ``jose`` package (at import and for its key).
        warnings.simplefilter("ignore", DeprecationWarning)
        import oidc_provider_mock

        mock_users = [oidc_provider_mock.User(sub=u.sub, claims=u.claims()) for u in users]
        oidc_provider_mock.init_app(
            app,
            require_client_registration=True,
            require_nonce=True,
            issue_refresh_token=True,
            access_token_max_age=ACCESS_TOKEN_LIFETIME,
            user_claims=mock_users,
        )
    app.secret_key = secrets.token_bytes(32)
    # init_app turns on Flask debug mode and werkzeug's debugger; tracebacks are not for browsers.
    app.debug = False
    app.wsgi_app = _PinnedIssuer(  # type: ignore[method-assign]
        getattr(app.wsgi_app, "app", app.wsgi_app), issuer
    )

    _register_client(app, state)
    _use_own_pages(app, state, users)
    app.before_request(lambda: _before_request(state))
    app.after_request(lambda response: _after_request(state, response))
    app.add_url_rule(
        "/oauth2/revoke", "revoke", lambda: _revoke(state), methods=["POST"], strict_slashes=True
    )
    return app


STYLESHEET_PATH = "/devstack/provider.css"
_PAGE_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self' {origins}; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def _use_own_pages(app: flask.Flask, state: _ProviderState, users: list[DevUser]) -> None:
    """The provider's pages from ``devstack/templates`` (the mock's are a fallback for a page
    this package does not have), styled by :data:`STYLESHEET_PATH`, with the demo users listed
    on the sign-in page."""
    app.jinja_loader = jinja2.ChoiceLoader(
        [jinja2.PackageLoader("devstack", "templates"), *filter(None, [app.jinja_loader])]
    )
    app.add_url_rule(STYLESHEET_PATH, "devstack_stylesheet", _stylesheet)
    demo_users = [{"sub": u.sub, "name": u.name, "access": _access(u)} for u in users]
    app.context_processor(lambda: {"demo_users": demo_users})
    # A form's redirect counts against form-action: the sign-in and sign-out forms end on the
    # application's origin.
    policy = _PAGE_POLICY.format(origins=" ".join(sorted(state.logout_origins)))
    app.after_request(lambda response: _page_policy(response, policy))


def _access(user: DevUser) -> str:
    if not user.zen_tenants:
        return "no tenants"
    return "; ".join(
        f"{tenant}: {', '.join(s.split(':')[0] for s in scopes)}"
        for tenant, scopes in user.zen_tenants.items()
    )


def _stylesheet() -> flask.Response:
    css = resources.files("devstack").joinpath("static", "provider.css").read_bytes()
    response = flask.make_response(css)
    response.headers["Content-Type"] = "text/css; charset=utf-8"
    response.headers["Cache-Control"] = "no-cache"
    return response


def _page_policy(response: flask.Response, policy: str) -> flask.Response:
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = policy
    return response


def _register_client(app: flask.Flask, state: _ProviderState) -> None:
    # The mock creates its storage when the blueprint is registered and hands it out through
    # flask.g; its registration endpoint picks random ids, so the fixed client is stored directly.
    from oidc_provider_mock._storage import Client

    with app.test_request_context("/"):
        app.preprocess_request()
        _storage().store_client(
            Client(
                id=state.client_id,
                secret=state.client_secret,
                redirect_uris=list(state.redirect_uris),
                allowed_scopes=Client.SCOPES_SUPPORTED,
                token_endpoint_auth_method="client_secret_basic",
            )
        )


def _storage() -> Any:
    return flask.g.oidc_provider_mock_storage


def _signing_key() -> RSAKey:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return RSAKey.import_key(_storage().jwk.as_dict(is_private=True))


def _access_token_generator(issuer: str, client_id: str) -> Any:
    def generate(client: Any, grant_type: str, user: Any, scope: str) -> str:
        key = _signing_key()
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": user.sub,
            "aud": [ACCESS_TOKEN_AUDIENCE, client_id],
            "client_id": client.get_client_id(),
            "scope": scope,
            "iat": now,
            "exp": now + int(ACCESS_TOKEN_LIFETIME.total_seconds()),
            "jti": secrets.token_urlsafe(16),
        }
        if "zen_tenants" in user.claims:
            claims["zen_tenants"] = user.claims["zen_tenants"]
        header = {"alg": "RS256", "typ": "at+jwt", "kid": key.kid}
        return jwt.encode(header, claims, key)

    return generate


class _PinnedIssuer:
    """WSGI wrapper: answer only requests addressed to the issuer's host and port."""

    def __init__(self, app: WSGIApplication, issuer: str) -> None:
        self.app = app
        parts = urlsplit(issuer)
        self.netloc = parts.netloc.lower()
        self.scheme = parts.scheme

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("HTTP_HOST", "").lower() != self.netloc:
            body = f"This provider answers only at {self.scheme}://{self.netloc}\n".encode()
            start_response(
                "421 Misdirected Request",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]
        with warnings.catch_warnings():
            # The mock calls authlib APIs that authlib has deprecated; they are not ours to fix.
            warnings.simplefilter("ignore", DeprecationWarning)
            return self.app(environ, start_response)


def _endpoint() -> str:
    return flask.request.endpoint or ""


def _before_request(state: _ProviderState) -> WerkzeugResponse | None:
    endpoint = _endpoint()
    if endpoint == f"{_MOCK}.authorize":
        if flask.request.method == "POST" and flask.request.form.get("action") == "deny":
            # RFC 6749 4.1.2.1: the error carries the request's state (the mock leaves it out).
            redirect_uri = flask.request.args.get("redirect_uri", "")
            if redirect_uri in state.redirect_uris:
                return _redirect_error(redirect_uri, "access_denied", "the user denied access")
        if refused := _check_pkce_request(state):
            return refused
        return _blank_user_name(state)
    if endpoint == f"{_MOCK}.issue_token":
        # The client first, then its grant (RFC 6749 3.2.1): a wrong secret is invalid_client
        # whatever the code, as a real provider answers.
        if (refused := _client_unauthenticated(state)) is not None:
            return refused
        grant_type = flask.request.form.get("grant_type")
        if grant_type == "password":
            return _password_grant(state)
        if grant_type == "authorization_code":
            return _check_code_verifier(state)
        if grant_type == "refresh_token":
            return _claim_refresh_token(state)
    if endpoint in {f"{_MOCK}.end_session", f"{_MOCK}.end_session_confirm"}:
        return _check_logout_redirect(state)
    if endpoint in {f"{_MOCK}.set_user", f"{_MOCK}.register_client"}:
        # Claims and clients come from the config file only.
        return _oauth_error(HTTPStatus.FORBIDDEN, "access_denied", "not offered by this provider")
    return None


def _after_request(state: _ProviderState, response: flask.Response) -> flask.Response:
    endpoint = _endpoint()
    if endpoint == f"{_MOCK}.authorize" and flask.request.method == "POST":
        _remember_code_challenge(state, response)
    elif endpoint == f"{_MOCK}.issue_token":
        grant_type = flask.request.form.get("grant_type")
        if grant_type == "authorization_code" and response.status_code == HTTPStatus.OK:
            with state.lock:
                state.code_challenges.pop(flask.request.form.get("code", ""), None)
            _add_kid_to_id_token(response)
        elif grant_type == "refresh_token":
            _rotate_refresh_token(state, response)
    elif endpoint == f"{_MOCK}.openid_config":
        _extend_discovery(response)
    elif endpoint == f"{_MOCK}.userinfo" and response.status_code == HTTPStatus.BAD_REQUEST:
        # The mock answers an unknown or revoked token with 400 access_denied; RFC 6750 says 401.
        return _invalid_token()
    return response


def _invalid_token() -> flask.Response:
    response = _oauth_error(HTTPStatus.UNAUTHORIZED, "invalid_token", "unknown or revoked token")
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def _oauth_error(status: HTTPStatus, error: str, description: str) -> flask.Response:
    response = flask.jsonify({"error": error, "error_description": description})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _redirect_error(redirect_uri: str, error: str, description: str) -> WerkzeugResponse:
    params = {"error": error, "error_description": description}
    if (oauth_state := flask.request.args.get("state")) is not None:
        params["state"] = oauth_state
    separator = "&" if "?" in redirect_uri else "?"
    return flask.redirect(f"{redirect_uri}{separator}{urlencode(params)}", HTTPStatus.FOUND)


def _check_pkce_request(state: _ProviderState) -> WerkzeugResponse | None:
    args = flask.request.args
    redirect_uri = args.get("redirect_uri")
    if args.get("client_id") != state.client_id or redirect_uri not in state.redirect_uris:
        # The mock refuses unknown clients and redirect URIs with its own error page.
        return None
    challenge = args.get("code_challenge")
    if not challenge or not _PKCE_VALUE.match(challenge):
        return _redirect_error(redirect_uri, "invalid_request", "code_challenge is required")
    if args.get("code_challenge_method") != "S256":
        return _redirect_error(
            redirect_uri, "invalid_request", "code_challenge_method must be S256"
        )
    return None


def _blank_user_name(state: _ProviderState) -> flask.Response | None:
    """The sign-in form again, saying what is missing, when it was sent with a blank name (the
    mock would sign in a user whose name is empty)."""
    form = flask.request.form
    if flask.request.method != "POST" or "sub" not in form or form["sub"].strip():
        return None
    page = flask.render_template(
        "authorization_form.html",
        client_id=state.client_id,
        redirect_uri=flask.request.args.get("redirect_uri", ""),
        sub_missing=True,
    )
    return flask.make_response(page, HTTPStatus.OK)


def _remember_code_challenge(state: _ProviderState, response: flask.Response) -> None:
    if response.status_code != HTTPStatus.FOUND or not response.location:
        return
    code = dict(_query_items(response.location)).get("code")
    challenge = flask.request.args.get("code_challenge")
    if code and challenge:
        with state.lock:
            state.code_challenges[code] = (challenge, state.clock())


def _query_items(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)


def _check_code_verifier(state: _ProviderState) -> flask.Response | None:
    form = flask.request.form
    with state.lock:
        challenge, issued_at = state.code_challenges.get(form.get("code", ""), ("", 0.0))
    if not challenge or state.clock() - issued_at > CODE_LIFETIME_SECONDS:
        return _oauth_error(HTTPStatus.BAD_REQUEST, "invalid_grant", "unknown or expired code")
    verifier = form.get("code_verifier", "")
    if not _PKCE_VALUE.match(verifier):
        return _oauth_error(HTTPStatus.BAD_REQUEST, "invalid_grant", "PKCE verification failed")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    if not hmac.compare_digest(expected, challenge):
        return _oauth_error(HTTPStatus.BAD_REQUEST, "invalid_grant", "PKCE verification failed")
    return None


def _claim_refresh_token(state: _ProviderState) -> flask.Response | None:
    # One refresh per refresh token, even when two requests race: the first claims it.
    token = flask.request.form.get("refresh_token", "")
    storage = _storage()
    with state.lock:
        if token in state.rotated:
            # A used refresh token came back: as real providers do, treat the whole chain as
            # stolen and revoke the token that replaced it, ending that login.
            _logger.warning("refresh token replayed; revoking its successor")
            successor = token
            while successor in state.rotated:
                successor = state.rotated[successor]
            _remove_refresh_token(storage, successor)
            return _oauth_error(HTTPStatus.BAD_REQUEST, "invalid_grant", "refresh token reused")
        if token in state.refresh_in_use or storage.get_refresh_token(token) is None:
            return _oauth_error(HTTPStatus.BAD_REQUEST, "invalid_grant", "invalid refresh token")
        state.refresh_in_use.add(token)
    flask.g.devidp_refresh_token = token
    return None


def _rotate_refresh_token(state: _ProviderState, response: flask.Response) -> None:
    old_token = flask.g.pop("devidp_refresh_token", None)
    if old_token is None:
        return
    storage = _storage()
    with state.lock:
        state.refresh_in_use.discard(old_token)
        if response.status_code != HTTPStatus.OK:
            return
        old = storage.remove_refresh_token(old_token)
        body = json.loads(response.get_data())
        if old is None or "access_token" not in body:
            return
        new_token = secrets.token_urlsafe(36)
        state.rotated[old_token] = new_token
        storage.store_refresh_token(
            replace(
                old,
                token=new_token,
                access_token=body["access_token"],
                expires_at=datetime.now(UTC) + ACCESS_TOKEN_LIFETIME,
            )
        )
    body["refresh_token"] = new_token
    response.set_data(json.dumps(body))


def _add_kid_to_id_token(response: flask.Response) -> None:
    # authlib signs the ID token without a ``kid``; relying parties select keys by it.
    body = json.loads(response.get_data())
    if "id_token" not in body:
        return
    key = _signing_key()
    claims = jwt.decode(body["id_token"], key, algorithms=["RS256"]).claims
    body["id_token"] = jwt.encode({"alg": "RS256", "typ": "JWT", "kid": key.kid}, claims, key)
    response.set_data(json.dumps(body))


def _extend_discovery(response: flask.Response) -> None:
    document = json.loads(response.get_data())
    root = document["issuer"]
    document.pop("registration_endpoint", None)
    document.update(
        {
            "revocation_endpoint": f"{root}/oauth2/revoke",
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic"],
            "claims_supported": ["sub", "iss", "aud", "name", "email", "zen_tenants"],
            "backchannel_logout_supported": False,
            "frontchannel_logout_supported": False,
        }
    )
    response.set_data(json.dumps(document, indent=2))


def _check_logout_redirect(state: _ProviderState) -> flask.Response | None:
    target = flask.request.values.get("post_logout_redirect_uri") or flask.request.values.get(
        "redirect_uri"
    )
    if target is not None and _origin(target) not in state.logout_origins:
        return _oauth_error(
            HTTPStatus.BAD_REQUEST, "invalid_request", "post_logout_redirect_uri is not allowed"
        )
    return None


def _client_unauthenticated(state: _ProviderState) -> flask.Response | None:
    """401 ``invalid_client`` unless the request carries the client's id and secret (Basic)."""
    auth = flask.request.authorization
    if (
        auth is None
        or auth.type != "basic"
        or not hmac.compare_digest(auth.username or "", state.client_id)
        or not hmac.compare_digest(auth.password or "", state.client_secret)
    ):
        response = _oauth_error(HTTPStatus.UNAUTHORIZED, "invalid_client", "client auth failed")
        response.headers["WWW-Authenticate"] = 'Basic realm="devidp"'
        return response
    return None


def _password_grant(state: _ProviderState) -> flask.Response:
    """A demo user's access token for a terminal (RFC 6749 section 4.3); the password is the
    user's name. No refresh or ID token: this is for calling the gateway with ``curl``. The
    client is authenticated before (``_before_request``)."""
    sub = flask.request.form.get("username", "")
    user = _storage().get_user(sub) if sub else None
    if user is None or not hmac.compare_digest(flask.request.form.get("password", ""), sub):
        return _oauth_error(
            HTTPStatus.BAD_REQUEST,
            "invalid_grant",
            "unknown demo user, or a password that is not the user's name",
        )
    scope = flask.request.form.get("scope") or "openid"
    generate = flask.current_app.config["OAUTH2_ACCESS_TOKEN_GENERATOR"]
    token = generate(_storage().get_client(state.client_id), "password", user, scope)
    response = flask.jsonify(
        {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(ACCESS_TOKEN_LIFETIME.total_seconds()),
            "scope": scope,
        }
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _revoke(state: _ProviderState) -> flask.Response:
    """Token revocation (RFC 7009): the client's own refresh or access tokens; always 200."""
    if (refused := _client_unauthenticated(state)) is not None:
        return refused
    token = flask.request.form.get("token")
    if not token:
        return _oauth_error(HTTPStatus.BAD_REQUEST, "invalid_request", "token is required")
    with state.lock:
        if not _remove_refresh_token(_storage(), token):
            _storage().remove_access_token(token)
    response = flask.make_response("", HTTPStatus.OK)
    response.headers["Cache-Control"] = "no-store"
    return response


def _remove_refresh_token(storage: Any, token: str) -> bool:
    """Remove a refresh token and the access token issued with it; False if it was unknown."""
    refresh = storage.remove_refresh_token(token)
    if refresh is None:
        return False
    storage.remove_access_token(refresh.access_token)
    return True


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _ip_address(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{host!r}: give a loopback IP address such as 127.0.0.1"
        ) from None


def _issuer_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in {"", "/"}:
        raise argparse.ArgumentTypeError(
            f"{url!r}: give an origin such as http://idp.localhost:8002"
        )
    return f"http://{parts.netloc.lower()}"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.idp",
        description="Development OpenID provider with the demo users of the config file.",
    )
    parser.add_argument("--config", default=os.environ.get("BFF_CONFIG"), help="TOML config")
    parser.add_argument("--host", type=_ip_address, default=LOOPBACK)
    parser.add_argument("--port", type=int, default=DEV_PROVIDER_PORT, help="0 picks a free port")
    parser.add_argument(
        "--issuer",
        type=_issuer_url,
        help="the provider's own URL, when clients reach it under another name than --host "
        "(a container's service name); default: http://HOST:PORT",
    )
    parser.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="DEVELOPMENT ONLY: bind --host although it is not a loopback address, for a "
        "container whose port is published on the host's loopback only (docker-compose.yml)",
    )
    parser.add_argument(
        "--redirect-uri",
        action="append",
        dest="redirect_uris",
        default=[],
        help=f"allowed redirect URI (repeatable); default: public_origin + {CALLBACK_PATH}",
    )
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback and not args.allow_non_loopback:
        parser.error(
            f"argument --host: {args.host}: the development provider binds to loopback only "
            "(127.0.0.1 or ::1)"
        )
    return args


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the development provider until interrupted."""
    args = _parse_args(argv)
    config_path = args.config or str(DEFAULT_CONFIG)
    try:
        settings = load_settings(config_path)
        users = load_dev_users(config_path)
    except (ConfigError, ValueError) as exc:
        sys.stderr.write(f"devstack.idp: {exc}\n")
        return 2
    redirect_uris = args.redirect_uris or [settings.bff.public_origin.rstrip("/") + CALLBACK_PATH]

    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _raise_system_exit)
    # The port is known only once bound (``--port 0``), and the issuer names it.
    server = werkzeug.serving.make_server(
        args.host, args.port, _not_ready, threaded=True, request_handler=_PlainRequestLog
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    issuer = args.issuer or f"http://{host}:{server.server_port}"
    server.app = create_idp_app(
        users,
        client_id=settings.oidc.client_id,
        client_secret=settings.oidc.client_secret,
        redirect_uris=redirect_uris,
        issuer=issuer,
    )
    names = ", ".join(user.sub for user in users)
    _write(f"development OpenID provider at {issuer} (issuer); demo users: {names}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


class _PlainRequestLog(werkzeug.serving.WSGIRequestHandler):
    """werkzeug's request line without its colour codes, with the ``traceparent`` received."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        line = getattr(self, "requestline", "")
        traceparent = self.headers.get("traceparent", "-") if hasattr(self, "headers") else "-"
        _logger.info(
            "%s %s traceparent=%s",
            line.translate(self._control_char_table),
            code,
            str(traceparent).translate(self._control_char_table),
        )


def _not_ready(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("503 Service Unavailable", [("Content-Length", "0")])
    return [b""]


if __name__ == "__main__":
    sys.exit(main())
