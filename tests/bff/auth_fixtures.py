"""Helpers for the sign-in, session and security tests: a fake provider, a browser, the app.

- :class:`FakeProvider`: an OpenID provider mocked with respx (discovery, JWKS, token endpoint,
  revocation, userinfo). It signs ID, access and logout tokens with its own RSA key, checks PKCE,
  rotates refresh tokens, counts every call, and lets a test decide what the token endpoint says.
- :class:`Browser`: keeps cookies the way a browser does (name → value, deleted on ``Max-Age=0``)
  and sends them explicitly, so a test can plant, swap or replay any cookie.
- :func:`running_app`: the BFF with the real authenticators, its provider and upstream mocked,
  driven in-process; :class:`Harness` bundles what a test needs from it.
- :func:`start_dev_provider`: the real development provider as a process on a free port.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import respx
from joserfc import jws
from joserfc.jwk import Key, RSAKey
from starlette.applications import Starlette

from bff import create_app
from bff.jwt_validation import BACKCHANNEL_LOGOUT_EVENT
from bff.settings import Settings
from bff.state.sessions import Session
from tests.bff.conftest import API, BFF, make_settings
from tests.e2e.oidc_login import find_login_form
from tests.support.clock import FakeClock
from tests.support.ports import free_port
from tests.support.processes import serving

ISSUER = "http://idp.test"
CLIENT_ID = "flows-bff-test"
CLIENT_SECRET = "test-client-secret"
CALLBACK_URL = f"{BFF}{API}/auth/callback"
LOGIN = f"{API}/auth/login"
BEARER_AUDIENCE = "https://flows.example/api"
"""What the fake provider's access tokens name as audience, and what the test gateway requires."""
CALLBACK = f"{API}/auth/callback"
WHOAMI = f"{API}/auth/session"
LOGOUT = f"{API}/auth/logout"
SESSIONS = f"{API}/auth/sessions"
BACKCHANNEL = f"{API}/auth/backchannel-logout"
PROBLEM = "application/problem+json"
ERRORS = "https://api.zen-mesh.io/errors/"
CONFIG = Path(__file__).resolve().parents[2] / "config" / "dev.toml"

IDLE_TIMEOUT = 600
ABSOLUTE_TIMEOUT = 3600

READ = "read:delivery-flows"
WRITE = "write:delivery-flows"


@dataclass(frozen=True)
class DemoUser:
    sub: str
    name: str
    email: str
    tenants: dict[str, list[str]]
    api_key: str
    """The sandbox API key with the same rights: what a relayed access token stands for."""


USERS = {
    "alice": DemoUser(
        "alice", "Alice Admin", "alice@acme.example", {"ten_acme": [READ, WRITE]}, "key_alice"
    ),
    "bob": DemoUser("bob", "Bob Reader", "bob@acme.example", {"ten_acme": [READ]}, "key_bob"),
    "carol": DemoUser(
        "carol", "Carol Globex", "carol@globex.example", {"ten_globex": [READ, WRITE]}, "key_carol"
    ),
}


# --- JOSE by hand: a test is the attacker too, and libraries refuse to forge -------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: object) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def sign(claims: dict[str, Any], key: Key, alg: str = "RS256", **header: Any) -> str:
    """A compact JWS with any header (``None`` drops one), signed with any key."""
    protected: dict[str, Any] = {"alg": alg, **header}
    if "kid" not in header and key.kid is not None:
        protected["kid"] = key.kid
    protected = {k: v for k, v in protected.items() if v is not None}
    signing_input = f"{b64json(protected)}.{b64json(claims)}"
    signature = jws.JWSRegistry.algorithms[alg].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return f"{b64json(header)}.{b64json(claims)}.{signature}"


@cache
def provider_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "idp-key-1", "use": "sig"})


@cache
def attacker_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "idp-key-1", "use": "sig"})


# --- the fake provider ---------------------------------------------------------------------------


@dataclass
class _Grant:
    user: DemoUser
    nonce: str
    challenge: str
    redirect_uri: str


@dataclass
class AuthorizeRequest:
    """The query of the provider URL the BFF redirected the browser to."""

    params: dict[str, str]

    @classmethod
    def from_location(cls, location: str) -> AuthorizeRequest:
        parts = urlsplit(location)
        query = parse_qs(parts.query, keep_blank_values=True)
        assert all(len(v) == 1 for v in query.values()), query
        return cls({k: v[0] for k, v in query.items()})


class FakeProvider:
    """An OpenID provider as respx routes under :data:`ISSUER`.

    ``id_token_hook(claims) -> str`` replaces the signed ID token of a code exchange;
    ``code_error`` makes the code exchange answer that OAuth error; ``refresh_mode`` is ``"ok"``,
    ``"invalid_grant"`` or ``"down"``; ``refresh_gate`` (an event) holds refresh answers back;
    ``metadata_extra`` adds members to its discovery document; ``issues_refresh_tokens`` False
    leaves refresh tokens out, as a provider does that was not asked the way it wants.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.key = provider_key()
        self.router = respx.MockRouter(base_url=ISSUER, assert_all_called=False)
        self.discovery = self.router.get("/.well-known/openid-configuration").mock(
            side_effect=self._discovery
        )
        self.jwks = self.router.get("/jwks").mock(side_effect=self._jwks)
        self.token = self.router.post("/token").mock(side_effect=self._token)
        self.revocation = self.router.post("/revoke").mock(side_effect=self._revoke)
        self.userinfo = self.router.get("/userinfo").respond(401)
        self.expires_in = 3600
        self.id_token_hook: Callable[[dict[str, Any]], str] | None = None
        self.code_error: str | None = None
        self.refresh_mode = "ok"
        self.refresh_gate: asyncio.Event | None = None
        self.sid_of_login: str | None = None
        self.refresh_calls = 0
        self.revoked: list[str] = []
        self.access_tokens: list[str] = []
        self.refresh_tokens: dict[str, DemoUser] = {}
        self._grants: dict[str, _Grant] = {}
        self.metadata_extra: dict[str, Any] = {}
        self.issues_refresh_tokens = True

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.router.async_handler)

    # the browser's part: the login page answers with a code
    def authorize(
        self, location: str, user: str = "alice", extra: dict[str, str] | None = None
    ) -> str:
        """What the provider's login page does for ``user``: the callback URL it redirects to
        (with ``extra`` parameters, such as an RFC 9207 ``iss``)."""
        request = AuthorizeRequest.from_location(location)
        params = request.params
        assert location.startswith(f"{ISSUER}/authorize?"), location
        assert params["client_id"] == CLIENT_ID
        assert params["response_type"] == "code"
        assert params["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self._grants[code] = _Grant(
            USERS[user], params["nonce"], params["code_challenge"], params["redirect_uri"]
        )
        answer = {"code": code, "state": params["state"], **(extra or {})}
        return f"{params['redirect_uri']}?" + urlencode(answer)

    # tokens
    def id_claims(self, user: DemoUser, nonce: str | None, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": CLIENT_ID,
            "sub": user.sub,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            "name": user.name,
            "email": user.email,
            "zen_tenants": user.tenants,
            "sid": self.sid_of_login,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def signed(self, claims: dict[str, Any], **header: Any) -> str:
        return sign(claims, self.key, **header)

    def bearer_token(self, user: str = "alice", **overrides: Any) -> str:
        """An access token for this BFF's API audience (what a script would send)."""
        overrides = {"aud": [BEARER_AUDIENCE, CLIENT_ID], **overrides}
        return self.signed(self.id_claims(USERS[user], None, **overrides), typ="at+jwt")

    def logout_token(self, *, sid: str | None = None, sub: str | None = None, **extra: Any) -> str:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": CLIENT_ID,
            "iat": int(self.clock()),
            "jti": secrets.token_urlsafe(12),
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
            "sid": sid,
            "sub": sub,
            **extra,
        }
        return self.signed({k: v for k, v in claims.items() if v is not None}, typ="logout+jwt")

    def _new_tokens(self, user: DemoUser) -> dict[str, Any]:
        access = f"at_{user.sub}_{secrets.token_urlsafe(12)}"
        refresh = f"rt_{user.sub}_{secrets.token_urlsafe(12)}"
        self.access_tokens.append(access)
        tokens: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if self.issues_refresh_tokens:
            self.refresh_tokens[refresh] = user
            tokens["refresh_token"] = refresh
        return tokens

    # endpoints
    def _discovery(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "issuer": ISSUER,
                "authorization_endpoint": f"{ISSUER}/authorize",
                "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks",
                "userinfo_endpoint": f"{ISSUER}/userinfo",
                "end_session_endpoint": f"{ISSUER}/logout",
                "revocation_endpoint": f"{ISSUER}/revoke",
                "code_challenge_methods_supported": ["S256"],
                **self.metadata_extra,
            },
        )

    def _jwks(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [self.key.as_dict(private=False)]})

    def _client_ok(self, request: httpx.Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        return request.headers.get("authorization") == expected

    async def _token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if not self._client_ok(request):
            return httpx.Response(401, json={"error": "invalid_client"})
        if form.get("grant_type") == "refresh_token":
            return await self._refresh(form)
        if form.get("grant_type") != "authorization_code":
            return httpx.Response(400, json={"error": "unsupported_grant_type"})
        if self.code_error:
            return httpx.Response(400, json={"error": self.code_error})
        grant = self._grants.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        challenge = b64(hashlib.sha256(verifier.encode()).digest())
        if (
            grant is None
            or grant.challenge != challenge
            or grant.redirect_uri != form.get("redirect_uri")
        ):
            return httpx.Response(400, json={"error": "invalid_grant"})
        claims = self.id_claims(grant.user, grant.nonce)
        id_token = self.id_token_hook(claims) if self.id_token_hook else self.signed(claims)
        return httpx.Response(200, json={**self._new_tokens(grant.user), "id_token": id_token})

    async def _refresh(self, form: dict[str, str]) -> httpx.Response:
        self.refresh_calls += 1
        if self.refresh_gate is not None:
            await self.refresh_gate.wait()
        if self.refresh_mode == "down":
            raise httpx.ConnectError("provider down")
        # Rotation with reuse detection: a refresh token is good exactly once.
        user = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
        if self.refresh_mode == "invalid_grant" or user is None:
            return httpx.Response(400, json={"error": "invalid_grant"})
        return httpx.Response(200, json=self._new_tokens(user))

    def _revoke(self, request: httpx.Request) -> httpx.Response:
        if not self._client_ok(request):
            return httpx.Response(401, json={"error": "invalid_client"})
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.revoked.append(form.get("token", ""))
        self.refresh_tokens.pop(form.get("token", ""), None)
        return httpx.Response(200)


# --- cookies as a browser keeps them -------------------------------------------------------------


@dataclass(frozen=True)
class SetCookie:
    name: str
    value: str
    attributes: dict[str, str]
    """Lower-cased attribute names; flags (HttpOnly, Secure) map to ``""``."""

    @property
    def deleted(self) -> bool:
        return self.attributes.get("max-age") == "0"


def set_cookies(response: httpx.Response) -> list[SetCookie]:
    cookies = []
    for header in response.headers.get_list("set-cookie"):
        first, *rest = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        attributes = {}
        for part in rest:
            key, _, attribute = part.partition("=")
            attributes[key.strip().lower()] = attribute.strip()
        cookies.append(SetCookie(name, value.strip('"'), attributes))
    return cookies


@dataclass
class Browser:
    """One browser: its own cookies, sent explicitly on every request to the BFF."""

    client: httpx.AsyncClient
    cookies: dict[str, str] = field(default_factory=dict)
    origin: str = BFF
    user_agent: str | None = None

    async def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        sent = dict(headers or {})
        if self.user_agent is not None:
            sent.setdefault("User-Agent", self.user_agent)
        if self.cookies and "Cookie" not in sent:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await self.client.request(method, url, headers=sent, **kwargs)
        # httpx would keep its own jar too; this class is the only cookie store.
        self.client.cookies.clear()
        for cookie in set_cookies(response):
            if cookie.deleted:
                self.cookies.pop(cookie.name, None)
            else:
                self.cookies[cookie.name] = cookie.value
        return response

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def api(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """A call as the dashboard's script makes it: ``X-CSRF: 1`` and, if unsafe, Origin."""
        sent = {"X-CSRF": "1"}
        if method not in {"GET", "HEAD"}:
            sent["Origin"] = self.origin
        sent.update(headers or {})
        return await self.request(method, url, headers=sent, **kwargs)


# --- the app -------------------------------------------------------------------------------------


def auth_settings(**sections: dict[str, Any]) -> Settings:
    """Test settings with the fake provider as issuer and short, round session timeouts."""
    base: dict[str, dict[str, Any]] = {
        "oidc": {
            "issuer": ISSUER,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "bearer_audience": BEARER_AUDIENCE,
        },
        "sessions": {
            "idle_timeout_seconds": IDLE_TIMEOUT,
            "absolute_timeout_seconds": ABSOLUTE_TIMEOUT,
        },
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return make_settings(**base)


@dataclass
class Harness:
    app: Starlette
    client: httpx.AsyncClient
    provider: FakeProvider
    clock: FakeClock
    upstream: respx.MockRouter
    base_url: str

    @property
    def cookie_name(self) -> str:
        return self.app.state.signin.cookies.session

    def browser(self, user_agent: str | None = None) -> Browser:
        return Browser(self.client, origin=self.base_url, user_agent=user_agent)

    async def login(self, browser: Browser, user: str = "alice", return_to: str = "/") -> str:
        """Sign ``user`` in through the fake provider; returns the new session id."""
        start = await browser.get(LOGIN, params={"returnTo": return_to})
        assert start.status_code == 302, start.text
        callback = await browser.get(self.provider.authorize(start.headers["location"], user))
        assert callback.status_code == 302, callback.text
        assert callback.headers["location"] == return_to
        return browser.cookies[self.cookie_name]

    async def insert_session(self, user: str, **fields: Any) -> str:
        """A session put straight into the app's store, as a login of ``user`` would leave it."""
        demo = USERS[user]
        session = Session(
            sub=demo.sub,
            name=demo.name,
            email=demo.email,
            tenants=demo.tenants,
            access_token=demo.api_key,
            **fields,
        )
        raw_id: str = await self.app.state.signin.sessions.create(session)
        return raw_id

    def browser_with(self, raw_id: str) -> Browser:
        browser = self.browser()
        browser.cookies[self.cookie_name] = raw_id
        return browser


@asynccontextmanager
async def running_app(
    upstream: respx.MockRouter,
    *,
    settings: Settings | None = None,
    clock: FakeClock | None = None,
    base_url: str = BFF,
    real_idp: bool = False,
) -> AsyncIterator[Harness]:
    """The BFF with its real authenticators over a fake provider and the mocked upstream.

    With ``real_idp`` the BFF reaches the provider named by ``settings`` over the network.
    """
    clock = clock or FakeClock()
    provider = FakeProvider(clock)
    app = create_app(
        settings or auth_settings(),
        upstream_transport=httpx.MockTransport(upstream.async_handler),
        idp_transport=None if real_idp else provider.transport,
        clock=clock,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=base_url) as client,
    ):
        yield Harness(app, client, provider, clock, upstream, base_url)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == ERRORS + slug, body
    assert body["status"] == status
    assert "location" not in response.headers
    return body


# --- the real development provider ---------------------------------------------------------------


@contextmanager
def start_dev_provider(redirect_uri: str = CALLBACK_URL) -> Iterator[str]:
    """``python -m devstack.idp`` on a free loopback port; yields its issuer URL."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable, "-m", "devstack.idp",
        "--config", str(CONFIG),
        "--port", str(port),
        "--redirect-uri", redirect_uri,
    ]  # fmt: skip
    with serving(
        argv,
        name="the development provider",
        url=issuer,
        ready="/.well-known/openid-configuration",
        stop_signal=signal.SIGINT,
    ):
        yield issuer


async def real_login(
    browser: Browser, idp: httpx.AsyncClient, user: str, return_to: str = "/"
) -> httpx.Response:
    """Sign in through the real provider's page; returns the BFF callback's response.

    The BFF hops go through ``browser`` (in-process), the provider hops through ``idp`` (a real
    client on loopback), exactly in the order a browser makes them.
    """
    start = await browser.get(LOGIN, params={"returnTo": return_to})
    assert start.status_code == 302, start.text
    page = await idp.get(start.headers["location"])
    while page.is_redirect:
        page = await idp.get(page.url.join(page.headers["location"]))
    assert page.status_code == 200, page.text
    form = find_login_form(page)
    answer = await idp.post(form.action, data=form.submission(user))
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(CALLBACK_URL + "?"), location
    return await browser.get(location)
