"""The development OpenID provider, driven in-process over WSGI as the BFF and a browser would."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import flask
import httpx
import pytest
import werkzeug
from joserfc import jwt
from joserfc.jwk import KeySet

from devstack.idp import create_idp_app, load_dev_users, main
from tests.support.oidc_login import browser_login, find_login_form

CONFIG = Path(__file__).resolve().parents[2] / "config" / "dev.toml"
ISSUER = "http://127.0.0.1:8002"
CLIENT_ID = "flows-bff-dev"
CLIENT_SECRET = "dev-only-client-secret"
REDIRECT_URI = "http://127.0.0.1:8000/api/bff/v1/auth/callback"
SCOPE = "openid profile email offline_access"


@pytest.fixture
def idp_app() -> flask.Flask:
    return create_idp_app(
        load_dev_users(CONFIG),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uris=[REDIRECT_URI],
        issuer=ISSUER,
    )


@pytest.fixture
def idp(idp_app: flask.Flask) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.WSGITransport(app=idp_app), base_url=ISSUER) as client:
        yield client


@dataclass
class Login:
    verifier: str
    nonce: str
    state: str

    @classmethod
    def new(cls) -> Login:
        return cls(secrets.token_urlsafe(48), secrets.token_urlsafe(16), secrets.token_urlsafe(16))

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def params(self, **overrides: str) -> dict[str, str]:
        params = {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "scope": SCOPE,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
        }
        params.update(overrides)
        return {key: value for key, value in params.items() if value}


def sign_in(idp: httpx.Client, user: str, login: Login) -> str:
    """Open the login page, submit its form as a browser does, return the code sent back."""
    page = idp.get("/oauth2/authorize", params=login.params())
    assert page.status_code == 200
    form = find_login_form(page)
    assert form.method == "post"
    answer = idp.post(form.action, data=form.submission(user))
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [login.state]
    return query["code"][0]


def exchange(
    idp: httpx.Client, code: str, verifier: str, *, secret: str = CLIENT_SECRET
) -> httpx.Response:
    return idp.post(
        "/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=(CLIENT_ID, secret),
    )


def refresh(idp: httpx.Client, refresh_token: str) -> httpx.Response:
    return idp.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )


def tokens_for(idp: httpx.Client, user: str) -> tuple[Login, dict[str, str]]:
    login = Login.new()
    response = exchange(idp, sign_in(idp, user, login), login.verifier)
    assert response.status_code == 200, response.text
    return login, response.json()


def keys(idp: httpx.Client) -> KeySet:
    return KeySet.import_key_set(idp.get("/jwks").json())


def test_discovery_names_the_pinned_issuer_and_its_endpoints(idp: httpx.Client) -> None:
    document = idp.get("/.well-known/openid-configuration").json()

    assert document["issuer"] == ISSUER
    assert document["authorization_endpoint"] == f"{ISSUER}/oauth2/authorize"
    assert document["token_endpoint"] == f"{ISSUER}/oauth2/token"
    assert document["userinfo_endpoint"] == f"{ISSUER}/userinfo"
    assert document["jwks_uri"] == f"{ISSUER}/jwks"
    assert document["end_session_endpoint"] == f"{ISSUER}/oauth2/end_session"
    assert document["revocation_endpoint"] == f"{ISSUER}/oauth2/revoke"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["token_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert "registration_endpoint" not in document


def test_requests_for_another_host_are_refused(idp: httpx.Client) -> None:
    response = idp.get("/.well-known/openid-configuration", headers={"Host": "localhost:8002"})

    assert response.status_code == 421


def test_alice_signs_in_with_pkce_and_nonce_and_gets_her_claims(idp: httpx.Client) -> None:
    login, tokens = tokens_for(idp, "alice")

    id_token = jwt.decode(tokens["id_token"], keys(idp), algorithms=["RS256"])
    assert id_token.header["kid"] == keys(idp).keys[0].kid
    claims = id_token.claims
    assert claims["iss"] == ISSUER
    assert CLIENT_ID in claims["aud"]
    assert claims["nonce"] == login.nonce
    assert claims["sub"] == "alice"
    assert claims["name"] == "Alice Admin"
    assert claims["email"] == "alice@acme.example"
    assert claims["zen_tenants"] == {"ten_acme": ["read:delivery-flows", "write:delivery-flows"]}
    assert tokens["token_type"] == "Bearer"
    assert tokens["refresh_token"]

    userinfo = idp.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    ).json()
    assert userinfo["sub"] == "alice"
    assert userinfo["name"] == "Alice Admin"
    assert userinfo["email"] == "alice@acme.example"
    assert userinfo["zen_tenants"] == claims["zen_tenants"]


def test_access_token_is_a_jwt_for_the_backend(idp: httpx.Client) -> None:
    _, tokens = tokens_for(idp, "alice")

    access = jwt.decode(tokens["access_token"], keys(idp), algorithms=["RS256"])
    assert access.header["typ"] == "at+jwt"
    assert access.claims["iss"] == ISSUER
    assert access.claims["sub"] == "alice"
    assert set(access.claims["aud"]) == {"zen-backend", CLIENT_ID}
    assert access.claims["zen_tenants"] == {
        "ten_acme": ["read:delivery-flows", "write:delivery-flows"]
    }
    assert access.claims["exp"] - access.claims["iat"] == int(tokens["expires_in"])


@pytest.mark.parametrize(
    ("user", "name", "tenants"),
    [
        ("bob", "Bob Reader", {"ten_acme": ["read:delivery-flows"]}),
        ("carol", "Carol Globex", {"ten_globex": ["read:delivery-flows", "write:delivery-flows"]}),
        ("dave", None, None),
    ],
)
def test_each_demo_user_gets_their_own_tenants(
    idp: httpx.Client, user: str, name: str | None, tenants: dict[str, list[str]] | None
) -> None:
    _, tokens = tokens_for(idp, user)

    claims = jwt.decode(tokens["id_token"], keys(idp), algorithms=["RS256"]).claims
    assert claims["sub"] == user
    assert claims.get("name") == name
    assert claims.get("zen_tenants") == tenants


def test_deny_answers_access_denied_with_the_requests_state(idp: httpx.Client) -> None:
    login = Login.new()
    form = find_login_form(idp.get("/oauth2/authorize", params=login.params()))

    answer = idp.post(form.action, data={**form.fields, "action": "deny"})

    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == [login.state]
    assert "code" not in query


def test_a_wrong_client_secret_is_refused(idp: httpx.Client) -> None:
    login = Login.new()
    code = sign_in(idp, "alice", login)

    refused = exchange(idp, code, login.verifier, secret="not-the-secret")

    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert "access_token" not in refused.json()


def test_an_unknown_client_is_refused_without_redirect(idp: httpx.Client) -> None:
    response = idp.get("/oauth2/authorize", params=Login.new().params(client_id="someone-else"))

    assert response.status_code == 400
    assert "location" not in response.headers


def test_an_unregistered_redirect_uri_is_refused_without_redirect(idp: httpx.Client) -> None:
    params = Login.new().params(redirect_uri="http://127.0.0.1:9999/api/bff/v1/auth/callback")

    response = idp.get("/oauth2/authorize", params=params)

    assert response.status_code == 400
    assert "location" not in response.headers


@pytest.mark.parametrize(
    "overrides",
    [{"code_challenge": ""}, {"code_challenge_method": "plain"}, {"code_challenge_method": ""}],
    ids=["no-challenge", "plain", "no-method"],
)
def test_authorization_without_s256_pkce_is_refused(
    idp: httpx.Client, overrides: dict[str, str]
) -> None:
    login = Login.new()

    response = idp.get("/oauth2/authorize", params=login.params(**overrides))

    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["invalid_request"]
    assert query["state"] == [login.state]
    assert "code" not in query


def test_authorization_without_nonce_is_refused(idp: httpx.Client) -> None:
    response = idp.get("/oauth2/authorize", params=Login.new().params(nonce=""))

    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == ["invalid_request"]


def test_a_wrong_code_verifier_is_refused(idp: httpx.Client) -> None:
    code = sign_in(idp, "alice", Login.new())

    refused = exchange(idp, code, Login.new().verifier)

    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


def test_a_code_is_good_once(idp: httpx.Client) -> None:
    login = Login.new()
    code = sign_in(idp, "alice", login)
    assert exchange(idp, code, login.verifier).status_code == 200

    replay = exchange(idp, code, login.verifier)

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"


def test_refresh_tokens_rotate_and_a_used_one_is_refused(idp: httpx.Client) -> None:
    _, tokens = tokens_for(idp, "alice")

    first = refresh(idp, tokens["refresh_token"])
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert rotated["access_token"] != tokens["access_token"]
    second = refresh(idp, rotated["refresh_token"])
    assert second.status_code == 200

    replay = refresh(idp, rotated["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"


def test_a_revoked_refresh_token_no_longer_refreshes(idp: httpx.Client) -> None:
    _, tokens = tokens_for(idp, "alice")

    unauthenticated = idp.post("/oauth2/revoke", data={"token": tokens["refresh_token"]})
    assert unauthenticated.status_code == 401
    still_valid = refresh(idp, tokens["refresh_token"])
    assert still_valid.status_code == 200

    tokens = still_valid.json()
    revoked = idp.post(
        "/oauth2/revoke",
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert revoked.status_code == 200

    refused = refresh(idp, tokens["refresh_token"])
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    userinfo = idp.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 401


def test_end_session_keeps_the_user_on_the_bff_origin(idp: httpx.Client) -> None:
    foreign = idp.get(
        "/oauth2/end_session", params={"post_logout_redirect_uri": "https://evil.example/"}
    )
    assert foreign.status_code == 400

    page = idp.get(
        "/oauth2/end_session", params={"post_logout_redirect_uri": "http://127.0.0.1:8000/"}
    )
    assert page.status_code == 200
    confirmed = idp.post(
        "/oauth2/end_session/confirm", data={"redirect_uri": "http://127.0.0.1:8000/"}
    )
    assert confirmed.status_code == 302
    assert confirmed.headers["location"] == "http://127.0.0.1:8000/"


def test_claims_cannot_be_changed_over_http(idp: httpx.Client) -> None:
    response = idp.put("/users/bob", json={"zen_tenants": {"ten_globex": ["admin:delivery-flows"]}})

    assert response.status_code == 403
    _, tokens = tokens_for(idp, "bob")
    claims = jwt.decode(tokens["id_token"], keys(idp), algorithms=["RS256"]).claims
    assert claims["zen_tenants"] == {"ten_acme": ["read:delivery-flows"]}


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "localhost", "::"])
def test_the_command_refuses_to_bind_beyond_loopback(
    host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(CONFIG), "--host", host, "--port", "0"])

    assert exited.value.code == 2
    assert "loopback" in capsys.readouterr().err


class RoutingTransport(httpx.BaseTransport):
    """Sends each request to the WSGI app serving its origin, as loopback ports would."""

    def __init__(self, apps: dict[str, httpx.WSGITransport]) -> None:
        self.apps = apps

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        return self.apps[origin].handle_request(request)


def fake_bff(idp: httpx.Client) -> Callable[..., Iterable[bytes]]:
    """A minimal relying party: login redirects to the provider, callback sets a cookie."""
    pending: dict[str, Login] = {}

    @werkzeug.Request.application
    def app(request: werkzeug.Request) -> werkzeug.Response:
        if request.path == "/api/bff/v1/auth/login":
            login = Login.new()
            pending[login.state] = login
            query = urlencode(login.params())
            response = werkzeug.Response(
                status=302, headers={"Location": f"{ISSUER}/oauth2/authorize?{query}"}
            )
            response.set_cookie("tx", login.state, httponly=True, samesite="Lax")
            return response
        if request.path == "/api/bff/v1/auth/callback":
            login = pending.pop(request.args["state"])
            assert request.cookies.get("tx") == login.state
            tokens = exchange(idp, request.args["code"], login.verifier).json()
            sub = jwt.decode(tokens["id_token"], keys(idp), algorithms=["RS256"]).claims["sub"]
            response = werkzeug.Response(status=302, headers={"Location": "/flows"})
            response.set_cookie("session", sub, httponly=True, samesite="Lax")
            return response
        return werkzeug.Response(f"page {request.path} for {request.cookies.get('session')}")

    return app


def test_browser_login_signs_in_through_the_provider_form(
    idp_app: flask.Flask, idp: httpx.Client
) -> None:
    bff_origin = "http://127.0.0.1:8000"
    routes = {
        ISSUER: httpx.WSGITransport(app=idp_app),
        bff_origin: httpx.WSGITransport(app=fake_bff(idp)),
    }
    with httpx.Client(transport=RoutingTransport(routes)) as browser:
        final = browser_login(browser, bff_origin, "carol", return_to="/flows")

    assert final.status_code == 200
    assert final.text == "page /flows for carol"
    assert [str(r.url).split("?")[0] for r in final.history] == [
        f"{ISSUER}/oauth2/authorize",
        f"{bff_origin}/api/bff/v1/auth/callback",
    ]


def test_a_replayed_refresh_token_also_revokes_its_successor(idp: httpx.Client) -> None:
    _, tokens = tokens_for(idp, "alice")
    successor = refresh(idp, tokens["refresh_token"]).json()["refresh_token"]

    replay = refresh(idp, tokens["refresh_token"])

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    after_replay = refresh(idp, successor)
    assert after_replay.status_code == 400
    assert after_replay.json()["error"] == "invalid_grant"


def test_an_authorization_code_expires_after_a_minute() -> None:
    now = [1000.0]
    app = create_idp_app(
        load_dev_users(CONFIG),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uris=[REDIRECT_URI],
        issuer=ISSUER,
        clock=lambda: now[0],
    )
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url=ISSUER) as idp:
        fresh, stale = Login.new(), Login.new()
        fresh_code = sign_in(idp, "alice", fresh)
        stale_code = sign_in(idp, "alice", stale)

        now[0] += 60
        assert exchange(idp, fresh_code, fresh.verifier).status_code == 200
        now[0] += 1
        expired = exchange(idp, stale_code, stale.verifier)

    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"


def test_the_command_names_a_malformed_demo_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "dev.toml"
    config.write_text(
        '[oidc]\nclient_secret = "s"\n[[dev.users]]\nsub = "erin"\nemail = "erin@acme.example"\n'
    )

    assert main(["--config", str(config), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "[[dev.users]]" in err
    assert "`name`" in err


def _password_grant(
    idp: httpx.Client, user: str, password: str, secret: str = CLIENT_SECRET
) -> httpx.Response:
    return idp.post(
        "/oauth2/token",
        data={"grant_type": "password", "username": user, "password": password},
        auth=(CLIENT_ID, secret),
    )


def test_a_demo_users_access_token_for_a_terminal(idp: httpx.Client) -> None:
    answer = _password_grant(idp, "bob", "bob")

    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer" and "refresh_token" not in body
    access = jwt.decode(body["access_token"], keys(idp), algorithms=["RS256"])
    assert access.header["typ"] == "at+jwt"
    assert access.claims["sub"] == "bob"
    assert set(access.claims["aud"]) == {"zen-backend", CLIENT_ID}
    assert access.claims["zen_tenants"] == {"ten_acme": ["read:delivery-flows"]}


@pytest.mark.parametrize(
    ("user", "password", "secret", "status", "error"),
    [
        ("bob", "alice", CLIENT_SECRET, 400, "invalid_grant"),
        ("mallory", "mallory", CLIENT_SECRET, 400, "invalid_grant"),
        ("", "", CLIENT_SECRET, 400, "invalid_grant"),
        ("bob", "bob", "not-the-secret", 401, "invalid_client"),
    ],
)
def test_the_terminal_shortcut_needs_the_client_and_a_demo_user(
    idp: httpx.Client, user: str, password: str, secret: str, status: int, error: str
) -> None:
    refused = _password_grant(idp, user, password, secret)

    assert refused.status_code == status
    assert refused.json()["error"] == error
    assert "access_token" not in refused.json()


def test_a_wrong_client_secret_is_refused_before_the_code_is_looked_at(
    idp: httpx.Client,
) -> None:
    refused = idp.post(
        "/oauth2/token",
        data={"grant_type": "authorization_code", "code": "no-such-code", "redirect_uri": "x"},
        auth=(CLIENT_ID, "not-the-secret"),
    )
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"


# --- its pages -------------------------------------------------------------------------------

# Found without importing it: the mock's import warns (authlib's deprecated jose), an error here.
_MOCK = importlib.util.find_spec("oidc_provider_mock")
assert _MOCK is not None and _MOCK.origin is not None
MOCK_TEMPLATES = Path(_MOCK.origin).parent / "templates"
OWN_TEMPLATES = Path(__file__).resolve().parents[2] / "devstack" / "templates"
EXTERNAL_URL = re.compile(r"""(?:href|src|action)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _pages(idp: httpx.Client) -> dict[str, httpx.Response]:
    login = Login.new()
    return {
        "sign in": idp.get("/oauth2/authorize", params=login.params()),
        "sign out": idp.get(
            "/oauth2/end_session", params={"post_logout_redirect_uri": "http://127.0.0.1:8000/"}
        ),
        "signed out": idp.post("/oauth2/end_session/confirm"),
        "error": idp.get("/oauth2/authorize", params={"client_id": "nobody"}),
        "home": idp.get("/"),
    }


def test_every_page_of_the_mock_has_one_of_ours() -> None:
    theirs = {path.name for path in MOCK_TEMPLATES.glob("*.html")}
    ours = {path.name for path in OWN_TEMPLATES.glob("*.html")}
    assert theirs <= ours, f"pages that would load the mock's CDN style sheet: {theirs - ours}"


def test_the_pages_load_only_the_providers_own_style_sheet(idp: httpx.Client) -> None:
    for name, page in _pages(idp).items():
        assert page.headers["content-type"].startswith("text/html"), name
        assert not EXTERNAL_URL.search(page.text), f"the {name} page refers elsewhere"
        assert "<style" not in page.text and "style=" not in page.text, name
        assert 'href="/devstack/provider.css"' in page.text, name
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "style-src 'self'" in policy, name
        assert "form-action 'self' http://127.0.0.1:8000" in policy, name
    sheet = idp.get("/devstack/provider.css")
    assert sheet.status_code == 200
    assert sheet.headers["content-type"].startswith("text/css")
    assert "prefers-color-scheme: dark" in sheet.text


def test_the_sign_in_page_lists_the_demo_users_and_what_they_may_do(idp: httpx.Client) -> None:
    page = idp.get("/oauth2/authorize", params=Login.new().params()).text
    assert "Alice Admin · ten_acme: read, write" in page
    assert "Bob Reader · ten_acme: read" in page
    assert "Nina Newcomer · no tenants" in page
    assert '<label for="sub">User name</label>' in page


def test_a_blank_user_name_is_asked_for_again_not_signed_in(idp: httpx.Client) -> None:
    login = Login.new()
    form = find_login_form(idp.get("/oauth2/authorize", params=login.params()))
    answer = idp.post(form.action, data=form.submission("  "))
    assert answer.status_code == 200
    assert "Type a user name." in answer.text
    assert 'aria-invalid="true"' in answer.text
