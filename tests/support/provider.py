"""A fake OpenID provider, mocked with respx, and the users and keys it signs for.

:class:`FakeProvider` answers discovery, JWKS, the token endpoint, revocation and userinfo under
:data:`ISSUER`. It signs ID, access and logout tokens with its own RSA key (:func:`provider_key`),
checks PKCE, rotates refresh tokens, counts every call, and lets a test decide what the token
endpoint says. :data:`USERS` are the people it signs in; :func:`attacker_key` is another key with
the same ``kid``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import respx
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, RSAKey

from bff.auth.jwt_validation import BACKCHANNEL_LOGOUT_EVENT
from tests.support.clock import FakeClock
from tests.support.tokens import b64, sign

ISSUER = "http://idp.test"
CLIENT_ID = "flows-bff-test"
CLIENT_SECRET = "test-client-secret"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
BEARER_AUDIENCE = "https://flows.example/api"
"""What the fake provider's access tokens name as audience, and what the test gateway requires."""

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
    dpop_jkt: str | None = None


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
    ``issuer`` is how its metadata and tokens spell the issuer: :data:`ISSUER`, or with a
    trailing slash as Auth0 spells its own; its endpoints stay under :data:`ISSUER`.

    ``dpop`` True: it offers DPoP (RFC 9449) with ES256, checks every proof it is sent (each
    kept in ``proofs``), binds codes to ``dpop_jkt`` or the PAR request's proof, and issues
    DPoP tokens bound to the proof's key (``bound``: access token → thumbprint); with
    ``dpop_nonce`` set it asks for that nonce (``use_dpop_nonce``), and ``dpop_token_type``
    replaces the type it answers (a provider that does not bind).
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.issuer = ISSUER
        self.key = provider_key()
        self.router = respx.MockRouter(base_url=ISSUER, assert_all_called=False)
        self.discovery = self.router.get("/.well-known/openid-configuration").mock(
            side_effect=self._discovery
        )
        self.jwks = self.router.get("/jwks").mock(side_effect=self._jwks)
        self.token = self.router.post("/token").mock(side_effect=self._token)
        self.revocation = self.router.post("/revoke").mock(side_effect=self._revoke)
        # RFC 9126, offered when the metadata names it (``metadata_extra``).
        self.par = self.router.post("/par").mock(side_effect=self._par)
        self.pushed: dict[str, dict[str, str]] = {}
        self.par_error: dict[str, str] | None = None
        """What the PAR endpoint answers instead of a request_uri (an OAuth error body)."""
        # RFC 8705 aliases, used when the metadata names them (``metadata_extra``).
        self.router.post("/mtls/token").mock(side_effect=self._token)
        self.router.post("/mtls/revoke").mock(side_effect=self._revoke)
        self.userinfo = self.router.get("/userinfo").mock(side_effect=self._userinfo)
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
        self.client_auth = "client_secret_basic"
        """How the client must prove itself at the token and revocation endpoints."""
        self.client_jwks: dict[str, Any] = {"keys": []}
        """The client's public keys, as the provider fetched them (``private_key_jwt``)."""
        self.assertions: list[dict[str, Any]] = []
        self.issues_refresh_tokens = True
        self.dpop = False
        self.dpop_nonce: str | None = None
        self.dpop_token_type = "DPoP"
        self.proofs: list[dict[str, Any]] = []
        self.bound: dict[str, str] = {}
        self._refresh_keys: dict[str, str] = {}
        self.userinfo_claims: dict[str, Any] | None = None
        """Set: userinfo answers these for a valid access token (bound ones with a proof)."""

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
        if "request_uri" in params:  # pushed (RFC 9126): the browser carried only a reference
            assert set(params) == {"client_id", "request_uri"}, params
            params = self.pushed.pop(params["request_uri"])
        assert location.startswith(f"{ISSUER}/authorize?"), location
        assert params["client_id"] == CLIENT_ID
        assert params["response_type"] == "code"
        assert params["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self._grants[code] = _Grant(
            USERS[user],
            params["nonce"],
            params["code_challenge"],
            params["redirect_uri"],
            params.get("dpop_jkt"),
        )
        answer = {"code": code, "state": params["state"], **(extra or {})}
        return f"{params['redirect_uri']}?" + urlencode(answer)

    # tokens
    def id_claims(self, user: DemoUser, nonce: str | None, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
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
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": int(self.clock()),
            "jti": secrets.token_urlsafe(12),
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
            "sid": sid,
            "sub": sub,
            **extra,
        }
        return self.signed({k: v for k, v in claims.items() if v is not None}, typ="logout+jwt")

    def _new_tokens(self, user: DemoUser, jkt: str | None = None) -> dict[str, Any]:
        access = f"at_{user.sub}_{secrets.token_urlsafe(12)}"
        refresh = f"rt_{user.sub}_{secrets.token_urlsafe(12)}"
        self.access_tokens.append(access)
        tokens: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer" if jkt is None else self.dpop_token_type,
            "expires_in": self.expires_in,
        }
        if jkt is not None:
            self.bound[access] = jkt
        if self.issues_refresh_tokens:
            self.refresh_tokens[refresh] = user
            tokens["refresh_token"] = refresh
            if jkt is not None:
                self._refresh_keys[refresh] = jkt
        return tokens

    def _proof(
        self, request: httpx.Request, access_token: str | None = None
    ) -> tuple[str | None, httpx.Response | None]:
        """RFC 9449 4.3: the thumbprint of the request's valid proof (None without one), or
        the refusal to answer."""
        if not self.dpop or "dpop" not in request.headers:
            return None, None
        refused = httpx.Response(400, json={"error": "invalid_dpop_proof"})
        try:
            proof = request.headers["dpop"]
            token = jws.extract_compact(proof.encode())
            header = dict(token.headers())
            key = JWKRegistry.import_key(header["jwk"])
            assert header["typ"] == "dpop+jwt" and not key.is_private
            jws.deserialize_compact(proof, key, algorithms=["ES256"])
            claims = json.loads(token.payload)
        except (ValueError, JoseError, KeyError, AssertionError):
            return None, refused
        url = str(request.url).split("?")[0]
        if (
            claims.get("htm") != request.method
            or claims.get("htu") != url
            or abs(claims.get("iat", 0) - self.clock()) > 60
            or claims.get("jti") in {seen["jti"] for seen in self.proofs}
        ):
            return None, refused
        if access_token is not None and claims.get("ath") != b64(
            hashlib.sha256(access_token.encode()).digest()
        ):
            return None, refused
        if self.dpop_nonce is not None and claims.get("nonce") != self.dpop_nonce:
            return None, httpx.Response(
                400, json={"error": "use_dpop_nonce"}, headers={"DPoP-Nonce": self.dpop_nonce}
            )
        jkt = key.thumbprint()
        self.proofs.append({**claims, "jkt": jkt, "raw": proof})
        return jkt, None

    # endpoints
    def _discovery(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "issuer": self.issuer,
                "authorization_endpoint": f"{ISSUER}/authorize",
                "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks",
                "userinfo_endpoint": f"{ISSUER}/userinfo",
                "end_session_endpoint": f"{ISSUER}/logout",
                "revocation_endpoint": f"{ISSUER}/revoke",
                "code_challenge_methods_supported": ["S256"],
                **({"dpop_signing_alg_values_supported": ["ES256"]} if self.dpop else {}),
                **self.metadata_extra,
            },
        )

    def _jwks(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [self.key.as_dict(private=False)]})

    def _client_ok(self, request: httpx.Request) -> bool:
        """The client proved itself as ``client_auth`` says: the secret in Basic or in the form,
        a valid assertion signed by a key of ``client_jwks`` (each ``jti`` once, ``aud`` the URL
        it was sent to), or only its id (``tls_client_auth``: the front checked the certificate).
        Every assertion accepted is kept in ``assertions``."""
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if self.client_auth == "client_secret_basic":
            basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            return request.headers.get("authorization") == f"Basic {basic}"
        if "authorization" in request.headers or form.get("client_id") != CLIENT_ID:
            return False
        if self.client_auth == "client_secret_post":
            return form.get("client_secret") == CLIENT_SECRET
        if self.client_auth == "private_key_jwt":
            return self._assertion_ok(form, str(request.url))
        return self.client_auth == "tls_client_auth" and set(form) >= {"client_id"}

    def _assertion_ok(self, form: dict[str, str], url: str) -> bool:
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            return False
        try:
            token = jws.extract_compact(form.get("client_assertion", "").encode())
            header = dict(token.headers())
            (key,) = [k for k in self.client_jwks["keys"] if k.get("kid") == header.get("kid")]
            public = JWKRegistry.import_key(key)
            jws.deserialize_compact(form["client_assertion"], public, algorithms=[header["alg"]])
        except (ValueError, JoseError, KeyError):
            return False
        claims = json.loads(token.payload)
        now = self.clock()
        fresh = claims.get("jti") not in {seen["jti"] for seen in self.assertions}
        if not (
            claims.get("iss") == claims.get("sub") == CLIENT_ID
            and claims.get("aud") == url
            and claims.get("exp", 0) > now >= claims.get("iat", now + 1) - 5
            and fresh
        ):
            return False
        self.assertions.append(
            {**claims, "alg": header["alg"], "kid": header["kid"], "raw": form["client_assertion"]}
        )
        return True

    async def _token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if not self._client_ok(request):
            return httpx.Response(401, json={"error": "invalid_client"})
        jkt, refused = self._proof(request)
        if refused is not None:
            return refused
        if form.get("grant_type") == "refresh_token":
            return await self._refresh(form, jkt)
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
            or grant.dpop_jkt not in (None, jkt)
        ):
            return httpx.Response(400, json={"error": "invalid_grant"})
        claims = self.id_claims(grant.user, grant.nonce)
        id_token = self.id_token_hook(claims) if self.id_token_hook else self.signed(claims)
        tokens = self._new_tokens(grant.user, jkt)
        return httpx.Response(200, json={**tokens, "id_token": id_token})

    async def _refresh(self, form: dict[str, str], jkt: str | None = None) -> httpx.Response:
        self.refresh_calls += 1
        if self.refresh_gate is not None:
            await self.refresh_gate.wait()
        if self.refresh_mode == "down":
            raise httpx.ConnectError("provider down")
        # Rotation with reuse detection: a refresh token is good exactly once.
        refresh = form.get("refresh_token", "")
        user = self.refresh_tokens.pop(refresh, None)
        if self.refresh_mode == "invalid_grant" or user is None:
            return httpx.Response(400, json={"error": "invalid_grant"})
        if self._refresh_keys.pop(refresh, None) not in (None, jkt):
            return httpx.Response(400, json={"error": "invalid_dpop_proof"})
        return httpx.Response(200, json=self._new_tokens(user, jkt))

    def _userinfo(self, request: httpx.Request) -> httpx.Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        jkt = self.bound.get(token)
        if self.userinfo_claims is None or token not in self.access_tokens:
            return httpx.Response(401)
        if jkt is not None:
            proved, refused = self._proof(request, token)
            if scheme != "DPoP" or refused is not None or proved != jkt:
                headers = {"WWW-Authenticate": 'DPoP error="invalid_token"'}
                if refused is not None and "dpop-nonce" in refused.headers:
                    headers = {
                        "WWW-Authenticate": 'DPoP error="use_dpop_nonce"',
                        "DPoP-Nonce": refused.headers["dpop-nonce"],
                    }
                return httpx.Response(401, headers=headers)
        return httpx.Response(200, json=self.userinfo_claims)

    def _par(self, request: httpx.Request) -> httpx.Response:
        if not self._client_ok(request):
            return httpx.Response(401, json={"error": "invalid_client"})
        if self.par_error is not None:
            return httpx.Response(400, json=self.par_error)
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        jkt, refused = self._proof(request)
        if refused is not None:
            return refused
        uri = f"urn:ietf:params:oauth:request_uri:{secrets.token_urlsafe(16)}"
        self.pushed[uri] = {
            k: v for k, v in form.items() if not k.startswith("client_") or k == "client_id"
        }
        if jkt is not None:  # RFC 9449 10.1: the proof at PAR binds the code
            self.pushed[uri]["dpop_jkt"] = jkt
        return httpx.Response(201, json={"request_uri": uri, "expires_in": 60})

    def _revoke(self, request: httpx.Request) -> httpx.Response:
        if not self._client_ok(request):
            return httpx.Response(401, json={"error": "invalid_client"})
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.revoked.append(form.get("token", ""))
        self.refresh_tokens.pop(form.get("token", ""), None)
        return httpx.Response(200)
