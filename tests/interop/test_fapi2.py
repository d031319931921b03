"""The FAPI 2.0 Security Profile, against a certified provider in its FAPI 2.0 profile.

The provider (panva's ``oidc-provider``, ``features.fapi`` profile ``2.0``, see
``provider.mjs --fapi2``) takes only pushed authorization requests, authenticates the client
with ``private_key_jwt`` (or ``tls_client_auth``), binds every access token to a DPoP key, and
asks for its nonce in every proof. The gateway runs with ``[oidc].profile = "fapi2"``. What the
provider recorded shows what the gateway did: the pushed requests and the key each bound its
code to, the client assertions it was shown, the tokens it issued and the key each is bound
to (``cnf.jkt``), the keys it fetched. Signing out under the profile is in ``test_logout.py``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import ssl
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from bff.auth.client_auth import load_client_keys
from bff.auth.dpop import DPoPKey
from bff.checks import write_self_signed
from bff.paths import CLIENT_JWKS_PATH, LOGIN_PATH
from tests.interop.browser import Browser
from tests.interop.stack import (
    API_AUDIENCE,
    CLIENT_ID,
    CLUSTER,
    DESTINATION,
    FAPI2,
    SOURCE,
    TENANT,
    Stack,
    Stacks,
    new_client_key,
)

pytestmark = [pytest.mark.interop, pytest.mark.e2e]

FLOWS = f"/tenants/{TENANT}/clusters/{CLUSTER}/delivery-flows"
ACCESS_TOKEN_TTL = 5
FAPI2_RELAY = replace(FAPI2, access_token_ttl=ACCESS_TOKEN_TTL)
"""The provider's API tokens relayed to the sandbox, which checks their proofs and asks for its
own DPoP nonce; they live five seconds, so that a test can outlive one."""
ROTATION = replace(FAPI2, client_keys=2)
"""The gateway's client key file lists a second key after the one that signs."""
MTLS = replace(FAPI2, client_auth="tls_client_auth")
"""The gateway proves itself with its certificate, presented to the TLS front of the provider."""
PROOF_OF_POSSESSION_ERRORS = {"use_dpop_nonce"}
"""The one refusal a sign-in may meet on its way: a proof without the provider's newest nonce,
which the gateway answers by sending it again with that nonce."""


def since(stack: Stack, earlier: int, event: str | None = None) -> list[dict[str, Any]]:
    """The provider's records after the first ``earlier`` ones (``event`` ones if named)."""
    records = stack.provider_events()[earlier:]
    return [record for record in records if event is None or record["event"] == event]


def refusals(stack: Stack, earlier: int) -> list[dict[str, Any]]:
    """What the provider refused after the first ``earlier`` records, nonce requests apart."""
    return [
        record
        for record in since(stack, earlier)
        if record["event"].endswith(".error") and record["error"] not in PROOF_OF_POSSESSION_ERRORS
    ]


def accepted_assertions(stack: Stack, earlier: int) -> list[tuple[str, str, int]]:
    """The client assertions the provider took after the first ``earlier`` records: where, the
    key (``kid``), the status of the answer. A proof without the nonce is refused (400) after
    the client's assertion was checked, and :func:`refusals` shows whether any other was."""
    return [
        (each["route"], each["kid"], each["status"])
        for each in since(stack, earlier, "client_assertion")
        if each["status"] != 400
    ]


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified: what the provider put in the token it issued."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def metadata(stack: Stack, http: httpx.Client) -> dict[str, Any]:
    response = http.get(f"{stack.issuer}/.well-known/openid-configuration")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def create_flow(browser: Browser, stack: Stack) -> httpx.Response:
    created = browser.api(
        "POST",
        FLOWS,
        json={
            "name": f"interop-fapi2-{secrets.token_hex(4)}",
            "sourceId": SOURCE,
            "destinationId": DESTINATION,
        },
    )
    assert created.status_code == 201, (created.text, stack.outputs())
    return created


def test_sign_in_pushes_its_request_and_binds_the_tokens_to_a_key_per_session(
    stacks: Stacks, http: httpx.Client
) -> None:
    stack = stacks.get("internal-jwt", FAPI2)
    offered = metadata(stack, http)
    assert offered["require_pushed_authorization_requests"] is True
    assert offered["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    earlier = len(stack.provider_events())

    browser = Browser(http, stack.gateway_url)
    start = browser.start_sign_in("/")
    # Everything travelled over the back channel: the browser carries a reference only.
    assert set(start.authorization_request.params) == {"client_id", "request_uri"}
    final = browser.consent(browser.log_in(start.page, "alice"))
    assert str(final.url) == f"{stack.gateway_url}/", (final.status_code, stack.outputs())
    # Without profile claims in the ID token (the provider's default when the access token is
    # for userinfo), the name comes from userinfo, asked with the bound token and a proof.
    whoami = browser.api("GET", "/auth/session")
    assert whoami.status_code == 200, (whoami.text, stack.outputs())
    assert whoami.json()["user"]["name"] == "Alice Admin"

    assert refusals(stack, earlier) == [], stack.outputs()
    (pushed,) = since(stack, earlier, "pushed_authorization_request.success")
    (issued,) = since(stack, earlier, "token_response")
    # The code was bound to the key of the proof sent with the pushed request, and the access
    # token to the key of the proof sent with the code exchange: one key, the session's.
    assert pushed["dpopJkt"], stack.outputs()
    assert issued == {
        "event": "token_response",
        "grantType": "authorization_code",
        "tokenType": "DPoP",
        "jkt": pushed["dpopJkt"],
        "audience": None,
    }
    assert [(route, status) for route, _, status in accepted_assertions(stack, earlier)] == [
        ("pushed_authorization_request", 201),
        ("token", 200),
    ], stack.outputs()
    # The provider asks every first proof for its nonce; the gateway's first proof of this
    # stack's life had none, was refused, and was sent again with the nonce.
    nonce_requests = [
        record
        for record in stack.provider_events()
        if record["event"].endswith(".error") and record["error"] == "use_dpop_nonce"
    ]
    assert nonce_requests, stack.outputs()

    # Another sign-in, another key.
    with httpx.Client(trust_env=False, timeout=10.0) as elsewhere:
        Browser(elsewhere, stack.gateway_url).sign_in()
    (other,) = since(stack, earlier, "token_response")[1:]
    assert other["tokenType"] == "DPoP"
    assert other["jkt"] not in {None, issued["jkt"]}


def test_a_refresh_keeps_the_tokens_bound_to_the_sessions_key(
    stacks: Stacks, http: httpx.Client
) -> None:
    stack = stacks.get("relay", FAPI2_RELAY)
    browser = Browser(http, stack.gateway_url)
    earlier = len(stack.provider_events())
    browser.sign_in()
    signed_in = time.monotonic()
    create_flow(browser, stack)

    remaining = signed_in + ACCESS_TOKEN_TTL + 0.5 - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)  # the access token's lifetime, which cannot be shortened
    create_flow(browser, stack)

    assert refusals(stack, earlier) == [], stack.outputs()
    issued = since(stack, earlier, "token_response")
    assert [token["grantType"] for token in issued] == ["authorization_code", "refresh_token"]
    (pushed,) = since(stack, earlier, "pushed_authorization_request.success")
    for token in issued:
        assert token["tokenType"] == "DPoP", token
        assert token["jkt"] == pushed["dpopJkt"], (token, pushed)
        claims = jwt_claims(token["accessToken"])
        assert claims["aud"] == API_AUDIENCE
        assert claims["cnf"] == {"jkt": pushed["dpopJkt"]}
    whoami = browser.api("GET", "/auth/session")
    assert whoami.status_code == 200, whoami.text
    assert whoami.json()["refreshable"] is True


def test_the_backend_takes_the_relayed_tokens_only_with_their_proofs(
    stacks: Stacks, http: httpx.Client
) -> None:
    stack = stacks.get("relay", FAPI2_RELAY)
    browser = Browser(http, stack.gateway_url)
    earlier = len(stack.provider_events())
    browser.sign_in()

    listed = browser.api("GET", FLOWS)
    assert listed.status_code == 200, (listed.text, stack.outputs())
    created = create_flow(browser, stack)
    flow = created.json()
    path = f"{FLOWS}/{flow['id']}"
    updated = browser.api(
        "PUT",
        path,
        headers={"If-Match": created.headers["etag"]},
        json={
            "name": f"{flow['name']}-renamed",
            "sourceId": SOURCE,
            "destinationId": DESTINATION,
            "retryPolicy": {"maxAttempts": 5, "backoffSeconds": 30},
        },
    )
    assert updated.status_code == 200, (updated.text, stack.outputs())
    assert updated.json()["name"] == f"{flow['name']}-renamed"
    deleted = browser.api("DELETE", path, headers={"If-Match": updated.headers["etag"]})
    assert deleted.status_code == 204, (deleted.text, stack.outputs())
    names = [item["name"] for item in browser.api("GET", FLOWS).json()["items"]]
    assert f"{flow['name']}-renamed" not in names

    # The token the gateway relayed, taken from the provider's record, is of no use to anyone
    # without the session's key: the sandbox refuses it as a bearer token and with a proof made
    # with another key, once that proof carries the sandbox's nonce.
    token = since(stack, earlier, "token_response")[-1]
    access_token = token["accessToken"]
    url = f"{stack.sandbox.url}/v1/tenants/{TENANT}/delivery-flows"
    with httpx.Client(trust_env=False, timeout=10.0) as thief:
        as_bearer = thief.get(url, headers={"Authorization": f"Bearer {access_token}"})
        assert as_bearer.status_code == 401, as_bearer.text
        assert 'error="invalid_token"' in as_bearer.headers["www-authenticate"]

        other_key = DPoPKey.generate()
        nonce: str | None = None
        for _ in range(2):
            answer = thief.get(
                url,
                headers={
                    "Authorization": f"DPoP {access_token}",
                    "DPoP": other_key.proof("GET", url, access_token=access_token, nonce=nonce),
                },
            )
            nonce = answer.headers.get("dpop-nonce")
            if 'error="use_dpop_nonce"' not in answer.headers.get("www-authenticate", ""):
                break
        assert answer.status_code == 401, answer.text
        assert 'error="invalid_token"' in answer.headers["www-authenticate"], answer.headers
        assert "another key" in answer.json()["detail"]
    assert_no_secret_printed(stack)


JWS = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
"""A compact JWS: an access, ID or logout token, a client assertion or a DPoP proof."""


def assert_no_secret_printed(stack: Stack) -> None:
    """No token, assertion, proof or private key in what the gateway and the sandbox printed
    (their logs, access lines and the gateway's audit trail)."""
    printed = stack.gateway.output() + stack.sandbox.output()
    private = [
        str(key.as_dict(private=True)["d"]) for key in load_client_keys(stack.client_key_file)
    ]
    assert private, "the client key file holds the keys the scan looks for"
    assert "delivery-flows" in stack.gateway.output(), "the gateway's access lines are scanned"
    assert not JWS.findall(printed), JWS.findall(printed)[:3]
    assert "PRIVATE KEY" not in printed and '"d":' not in printed
    assert not [d for d in private if d in printed]


def published_kids(stack: Stack, http: httpx.Client) -> list[str]:
    response = http.get(stack.gateway_url + CLIENT_JWKS_PATH)
    assert response.status_code == 200, response.text
    return [key["kid"] for key in response.json()["keys"]]


def key_blocks(path: Path) -> list[bytes]:
    """The keys of a PEM file, in order."""
    return [b"-----BEGIN" + block for block in path.read_bytes().split(b"-----BEGIN")[1:]]


def test_a_client_key_published_before_the_provider_fetched_can_take_over(
    stacks: Stacks, http: httpx.Client
) -> None:
    """A rotation of the gateway's client key, as the provider sees it.

    oidc-provider keeps the client's key set it fetched from ``jwks_uri`` for at least a minute,
    or for as long as the answer's ``Cache-Control: max-age`` says (the gateway says 300 s); an
    assertion signed with a key it has not seen is refused in that time, not a reason to fetch
    again. So the next key is published (second in the key file) before it signs (first), with a
    fetch by the provider in between.
    """
    stack = stacks.get("internal-jwt", ROTATION)
    jwks_uri = stack.gateway_url + CLIENT_JWKS_PATH
    current, following = key_blocks(stack.client_key_file)
    signing, published = published_kids(stack, http)

    earlier = len(stack.provider_events())
    Browser(http, stack.gateway_url).sign_in()
    fetches = [each["url"] for each in since(stack, earlier, "outgoing_request")]
    assert fetches == [jwks_uri], stack.outputs()
    assert {kid for _, kid, _ in accepted_assertions(stack, earlier)} == {signing}

    # A key the provider has not fetched cannot sign yet.
    stack.client_key_file.write_bytes(new_client_key() + current + following)
    stack.restart_gateway()
    unseen = published_kids(stack, http)[0]
    earlier = len(stack.provider_events())
    with httpx.Client(trust_env=False, timeout=10.0) as other:
        refused = other.get(
            stack.gateway_url + LOGIN_PATH,
            headers={"Sec-Fetch-Mode": "navigate", "Accept": "text/html"},
        )
    assert refused.status_code == 400, (refused.status_code, stack.outputs())
    assert "invalid_client" in refused.text
    assert since(stack, earlier, "client_assertion") == [
        {
            "event": "client_assertion",
            "route": "pushed_authorization_request",
            "kid": unseen,
            "status": 401,
        }
    ], stack.outputs()
    assert since(stack, earlier, "outgoing_request") == [], "the provider fetched the keys again"

    # The key that was published when the provider fetched takes over.
    stack.client_key_file.write_bytes(following + current)
    stack.restart_gateway()
    assert published_kids(stack, http) == [published, signing]
    earlier = len(stack.provider_events())
    with httpx.Client(trust_env=False, timeout=10.0) as again:
        Browser(again, stack.gateway_url).sign_in()
    assert accepted_assertions(stack, earlier) == [
        ("pushed_authorization_request", published, 201),
        ("token", published, 200),
    ], stack.outputs()
    assert refusals(stack, earlier) == [], stack.outputs()


FRONT_LINE = re.compile(r'(?P<method>\S+) (?P<path>\S+) (?P<status>\d+) client="(?P<client>[^"]*)"')


def test_tls_client_auth_through_a_tls_terminating_front(
    stacks: Stacks, http: httpx.Client, tmp_path: Path
) -> None:
    stack = stacks.get("internal-jwt", MTLS)
    assert stack.front is not None
    offered = metadata(stack, http)
    assert "tls_client_auth" in offered["token_endpoint_auth_methods_supported"]
    aliases = offered["mtls_endpoint_aliases"]
    assert aliases["token_endpoint"] == f"{stack.front.url}/token"
    served = len(stack.front_requests())
    earlier = len(stack.provider_events())

    browser = Browser(http, stack.gateway_url)
    browser.sign_in()
    create_flow(browser, stack)
    logout = browser.api("POST", "/auth/logout")
    assert logout.status_code == 200, logout.text

    # Every call that proves the client went through the front, with the certificate bff keys
    # made; the provider took it (no client assertions: the certificate is the proof).
    requests = [FRONT_LINE.fullmatch(line) for line in stack.front_requests()[served:]]
    assert all(requests), stack.front_requests()
    assert [
        (m["method"], m["path"], m["status"], m["client"])
        for m in requests
        if m and m["status"] != "400"  # a proof without the nonce, sent again with it
    ] == [
        ("POST", "/request", "201", f"CN={CLIENT_ID}"),
        ("POST", "/token", "200", f"CN={CLIENT_ID}"),
        ("POST", "/token/revocation", "200", f"CN={CLIENT_ID}"),
    ], stack.outputs()
    assert since(stack, earlier, "client_assertion") == []
    assert refusals(stack, earlier) == [], stack.outputs()
    (issued,) = since(stack, earlier, "token_response")
    assert issued["tokenType"] == "DPoP"
    assert since(stack, earlier, "grant.revoked") == [
        {"event": "grant.revoked", "route": "revocation"}
    ]

    # Another certificate with the same subject is not the client's: the provider checks the
    # certificate, not only the name in it.
    (tmp_path / "key.pem").write_bytes(new_client_key())
    write_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", CLIENT_ID)
    context = ssl.create_default_context(cafile=stack.front_ca)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    with httpx.Client(trust_env=False, timeout=10.0, verify=context) as impostor:
        answer = impostor.post(
            aliases["token_endpoint"],
            data={
                "grant_type": "refresh_token",
                "refresh_token": "any",
                "client_id": CLIENT_ID,
            },
        )
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_client"
