"""The gateway, the sandbox backend and panva's ``oidc-provider``, as real processes on loopback.

:func:`running_stack` starts the three on free ports, configured for each other: the provider
(``provider.mjs``) registers the gateway as its one client, the gateway signs users in there, and
the sandbox trusts whoever signs the upstream credential: the provider in credential mode
``relay`` (its JWT access tokens for the API), the gateway in ``internal-jwt`` (the tokens it
mints, verified with its published keys). A gateway that authenticates with ``tls_client_auth``
reaches the provider's client endpoints through a TLS-terminating front (:mod:`.front`, nginx),
a fourth process.

:func:`interop_toolchain` says whether Node, npm and the installed provider are there, and
:func:`tls_front_toolchain` whether nginx is: without them the interoperability tests skip,
unless ``REQUIRE_INTEROP=1`` (or ``CI=true``) is set; then they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bff.paths import API_PREFIX, CALLBACK_PATH, CLIENT_JWKS_PATH, JWKS_PATH
from tests.interop.front import (
    ACCESS_LOG,
    FRONT_CA,
    nginx_binary,
    serving_front,
    write_front_certificates,
)
from tests.support.ports import free_ports
from tests.support.processes import BFF_SCRIPT, ServerProcess, clean_environ, serving

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROVIDER_SCRIPT = HERE / "provider.mjs"
PROVIDER_PACKAGE = HERE / "node_modules" / "oidc-provider" / "package.json"

CLIENT_ID = "flows-bff-interop"
CLIENT_SECRET = "interop-client-secret"
API_RESOURCE = "urn:zen:backend"
"""The flows API's resource indicator (RFC 8707) at the provider, asked for in ``relay`` mode."""
API_AUDIENCE = "zen-backend"
"""The audience of every token the sandbox accepts, the provider's and the gateway's alike."""
BACKCHANNEL_PATH = API_PREFIX + "/auth/backchannel-logout"
START_TIMEOUT = 30.0
CLIENT_KEY_FILE = "client-key.pem"
"""``[oidc].client_key_file``, beside the gateway's configuration in the stack's folder."""
CLIENT_CERT_FILE = "client-cert.pem"

Credential = Literal["relay", "internal-jwt"]

TENANT = "ten_acme"
CLUSTER = "plane_interop"
SOURCE = "ing_interop_stripe"
DESTINATION = "dest_interop_orders"

SANDBOX_CATALOG = f"""
[[sandbox.tenants]]
id = "{TENANT}"
name = "Acme Corp"

[[sandbox.clusters]]
id = "{CLUSTER}"
tenant_id = "{TENANT}"
name = "Interop cluster"
region = "us-east-1"
status = "active"

[[sandbox.ingesters]]
id = "{SOURCE}"
tenant_id = "{TENANT}"
cluster_id = "{CLUSTER}"
name = "Stripe production"
type = "stripe"

[[sandbox.destinations]]
id = "{DESTINATION}"
tenant_id = "{TENANT}"
cluster_id = "{CLUSTER}"
name = "Orders API"
url = "https://orders.acme.example/hooks"
"""


def interop_required() -> bool:
    return os.environ.get("REQUIRE_INTEROP") == "1" or os.environ.get("CI") == "true"


def _skip_or_fail(reason: str) -> NoReturn:
    if interop_required():
        pytest.fail(f"{reason}; REQUIRE_INTEROP=1 or CI=true forbids skipping")
    pytest.skip(reason)


def interop_toolchain() -> str:
    """The ``node`` binary; skips the test (fails it when required) if anything is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        reason = "node and npm are not on PATH (apt-get install nodejs npm)"
    elif not PROVIDER_PACKAGE.exists():
        reason = "oidc-provider is not installed (npm ci --prefix tests/interop, or make test)"
    else:
        return node
    _skip_or_fail(reason)


def tls_front_toolchain() -> str:
    """The ``nginx`` binary of the TLS front; skips (fails when required) without it."""
    nginx = nginx_binary()
    if nginx is None:
        _skip_or_fail("nginx is not on PATH (apt-get install -y nginx-light)")
    return nginx


@dataclass(frozen=True)
class ProviderOptions:
    """How the provider behaves where the tests vary it (everything else is its default)."""

    alg: str = "RS256"
    """Signs ID tokens, logout tokens and the API's access tokens."""
    access_token_ttl: int = 3600
    rotate_refresh_tokens: bool = False
    refuse_userinfo: bool = False
    """Its userinfo endpoint answers every token with 401 invalid_token."""
    client_auth: str = "client_secret_basic"
    """How the gateway must authenticate; ``private_key_jwt``: with keys the provider fetches
    from the gateway's client JWKS; ``tls_client_auth``: with the certificate ``bff keys``
    made, presented to a TLS front (nginx) whose URLs the provider names as its mTLS aliases."""
    require_par: bool = False
    """The provider takes only pushed authorization requests."""
    par: str = "never"
    """The gateway's ``[oidc].par``."""
    fapi2: bool = False
    """The provider in its FAPI 2.0 profile (``provider.mjs --fapi2``: pushed requests only,
    DPoP-bound tokens, ``private_key_jwt`` or ``tls_client_auth``) and the gateway with
    ``[oidc].profile = "fapi2"`` and ``dpop = true``."""
    dpop_nonce: bool = False
    """DPoP proofs must carry a nonce the server gave: the provider's, and in ``relay`` mode the
    sandbox's."""
    client_keys: int = 1
    """Keys in the gateway's client key file: the first signs, the others are only published
    (the next one of a rotation)."""


FAPI2 = ProviderOptions(
    alg="PS256", client_auth="private_key_jwt", par="always", fapi2=True, dpop_nonce=True
)
"""The provider in its FAPI 2.0 profile, asking for DPoP nonces; its ID tokens, logout tokens and
API tokens signed with PS256 (FAPI 2.0 Security Profile 5.4). The gateway with
``profile = "fapi2"``, its client key made by ``bff keys``."""


class _Restartable(AbstractContextManager[ServerProcess]):
    """A server whose process can be replaced by a new one started the same way."""

    def __init__(self, start: Callable[[int], AbstractContextManager[ServerProcess]]) -> None:
        self._start = start
        self._starts = 0
        self._running: AbstractContextManager[ServerProcess] | None = None

    def __enter__(self) -> ServerProcess:
        self._starts += 1
        self._running = self._start(self._starts)
        return self._running.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.__exit__(*exc_info)

    def restart(self) -> ServerProcess:
        self.__exit__(None, None, None)
        return self.__enter__()


@dataclass
class Stack:
    """The processes of one configuration, and where they listen."""

    credential: Credential
    options: ProviderOptions
    provider: ServerProcess
    sandbox: ServerProcess
    gateway: ServerProcess
    work_dir: Path
    """Where the configurations, keys and logs are."""
    front: ServerProcess | None = None
    """The TLS front of the provider's mTLS endpoint aliases (``tls_client_auth`` only)."""
    _gateway_process: _Restartable | None = field(default=None, repr=False)

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    @property
    def client_key_file(self) -> Path:
        """The gateway's ``[oidc].client_key_file``: its keys in PEM, the first signs."""
        return self.work_dir / CLIENT_KEY_FILE

    @property
    def front_ca(self) -> Path:
        """The CA of the TLS front's certificate."""
        return self.work_dir / "front" / FRONT_CA

    def front_requests(self) -> list[str]:
        """What the TLS front served, a line per request (:data:`.front.ACCESS_LOG`)."""
        log = self.work_dir / "front" / ACCESS_LOG
        return log.read_text().splitlines() if log.exists() else []

    def restart_gateway(self) -> None:
        """Stop the gateway and start it again with the same configuration; it reads its
        settings and key files anew, and forgets its sessions (they are in its memory)."""
        assert self._gateway_process is not None
        self.gateway = self._gateway_process.restart()

    @property
    def issuer(self) -> str:
        return self.provider.url

    @property
    def callback_url(self) -> str:
        return self.gateway_url + CALLBACK_PATH

    @property
    def post_logout_redirect(self) -> str:
        return self.gateway_url + "/"

    def provider_events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The JSON lines the provider wrote (``provider.mjs``), only ``event`` ones if named."""
        events = []
        for line in self.provider.output().splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (event is None or record.get("event") == event):
                events.append(record)
        return events

    def refreshes(self) -> list[dict[str, Any]]:
        """Refresh-token grants the provider answered, successful or refused."""
        return [
            record
            for record in self.provider_events()
            if record.get("event") in {"grant.success", "grant.error"}
            and record.get("grantType") == "refresh_token"
        ]

    def outputs(self) -> str:
        """What each process printed, for the message of a failed assertion."""
        processes = [
            ("provider", self.provider),
            ("gateway", self.gateway),
            ("sandbox", self.sandbox),
        ]
        if self.front is not None:
            processes.append(("TLS front", self.front))
        return "\n".join(f"--- {name} ---\n{process.output()}" for name, process in processes)


def _gateway_config(
    credential: Credential,
    options: ProviderOptions,
    gateway_url: str,
    issuer: str,
    sandbox_url: str,
    work_dir: Path,
) -> Path:
    authorization = (
        f'extra_authorization_params = {{ resource = "{API_RESOURCE}" }}'
        if credential == "relay"
        else ""
    )
    if options.client_auth in {"private_key_jwt", "tls_client_auth"}:
        authorization += f'\nclient_auth = "{options.client_auth}"'
        authorization += f'\nclient_key_file = "{CLIENT_KEY_FILE}"'
    if options.client_auth == "tls_client_auth":
        authorization += f'\nclient_cert_file = "{CLIENT_CERT_FILE}"'
    authorization += f'\npar = "{options.par}"'
    if options.fapi2:
        authorization += '\nprofile = "fapi2"\ndpop = true'

    path = work_dir / "gateway.toml"
    path.write_text(
        f"""
[bff]
public_origin = "{gateway_url}"
console = true

[upstream]
base_url = "{sandbox_url}"
credential = "{credential}"

[internal_jwt]
audience = "{API_AUDIENCE}"

[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
{authorization}

[sessions]
backend = "memory"

[log]
format = "text"
"""
    )
    return path


def _sandbox_config(
    credential: Credential, options: ProviderOptions, gateway_url: str, issuer: str, work_dir: Path
) -> Path:
    if credential == "relay":
        trusted, jwks_uri, algorithms = issuer, f"{issuer}/jwks", [options.alg]
    else:
        trusted, jwks_uri, algorithms = gateway_url, gateway_url + JWKS_PATH, ["ES256"]
    nonces = "dpop_nonce_required = true" if options.dpop_nonce and credential == "relay" else ""
    path = work_dir / "sandbox.toml"
    path.write_text(
        f"""
[sandbox]
host = "127.0.0.1"
{nonces}
{SANDBOX_CATALOG}
[[sandbox.trusted_issuers]]
issuer = "{trusted}"
jwks_uri = "{jwks_uri}"
audience = "{API_AUDIENCE}"
algorithms = {json.dumps(algorithms)}
"""
    )
    return path


@dataclass(frozen=True)
class _Front:
    """Where the TLS front listens, the provider's listener behind it, and what the provider
    must know of the client's certificate."""

    url: str
    port: int
    upstream_port: int
    client_ca: Path
    subject_dn: str


def _provider_argv(
    node: str, port: int, gateway_url: str, options: ProviderOptions, front: _Front | None
) -> list[str]:
    argv = [
        node, str(PROVIDER_SCRIPT),
        "--port", str(port),
        "--client-id", CLIENT_ID,
        "--client-secret", CLIENT_SECRET,
        "--redirect-uri", gateway_url + CALLBACK_PATH,
        "--post-logout-redirect-uri", gateway_url + "/",
        "--backchannel-logout-uri", gateway_url + BACKCHANNEL_PATH,
        "--resource", API_RESOURCE,
        "--audience", API_AUDIENCE,
        "--alg", options.alg,
        "--access-token-ttl", str(options.access_token_ttl),
    ]  # fmt: skip
    if options.rotate_refresh_tokens:
        argv.append("--rotate-refresh-tokens")
    if options.refuse_userinfo:
        argv.append("--refuse-userinfo")
    if options.require_par:
        argv.append("--require-par")
    if options.fapi2:
        argv.append("--fapi2")
    if options.dpop_nonce:
        argv.append("--dpop-nonce")
    if options.client_auth != "client_secret_basic":
        argv += ["--client-auth", options.client_auth]
    if options.client_auth == "private_key_jwt":
        argv += ["--jwks-uri", gateway_url + CLIENT_JWKS_PATH]
    if front is not None:
        argv += [
            "--mtls-front", front.url,
            "--mtls-port", str(front.upstream_port),
            "--client-ca", str(front.client_ca),
            "--tls-client-auth-subject-dn", front.subject_dn,
        ]  # fmt: skip
    return argv


def _write_client_keys(gateway_toml: Path, options: ProviderOptions) -> str:
    """What an operator does: ``bff keys`` writes the key (and certificate) the configuration
    names; the keys of a rotation to come are added after the first. Returns what it printed."""
    keys = subprocess.run(
        [str(BFF_SCRIPT), "keys", "--config", str(gateway_toml)],
        check=True,
        capture_output=True,
        text=True,
        env=clean_environ(),
    )
    key_file = gateway_toml.parent / CLIENT_KEY_FILE
    for _ in range(options.client_keys - 1):
        with key_file.open("ab") as pem:
            pem.write(new_client_key())
    return keys.stdout


def new_client_key() -> bytes:
    """A private key in PEM, of the kind ``bff keys`` makes (EC P-256)."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _registered_subject(keys_output: str) -> str:
    """The ``tls_client_auth_subject_dn`` that ``bff keys`` says to register."""
    match = re.search(r"tls_client_auth_subject_dn (\S+)", keys_output)
    assert match, f"bff keys named no subject to register:\n{keys_output}"
    return match.group(1)


@contextmanager
def running_stack(
    node: str, work_dir: Path, credential: Credential, options: ProviderOptions
) -> Iterator[Stack]:
    """Provider, sandbox and gateway on free loopback ports, all answering; stopped after."""
    nginx = tls_front_toolchain() if options.client_auth == "tls_client_auth" else None
    provider_port, sandbox_port, gateway_port, front_port, behind_front_port = free_ports(5)
    issuer = f"http://127.0.0.1:{provider_port}"
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    work_dir.mkdir(parents=True, exist_ok=True)
    gateway_toml = _gateway_config(credential, options, gateway_url, issuer, sandbox_url, work_dir)
    keys_output = ""
    if options.client_auth in {"private_key_jwt", "tls_client_auth"}:
        keys_output = _write_client_keys(gateway_toml, options)
    front: _Front | None = None
    gateway_env = clean_environ()
    if nginx is not None:
        front_ca = write_front_certificates(work_dir / "front")
        front = _Front(
            url=f"https://127.0.0.1:{front_port}",
            port=front_port,
            upstream_port=behind_front_port,
            client_ca=work_dir / CLIENT_CERT_FILE,
            subject_dn=_registered_subject(keys_output),
        )
        # The gateway trusts the front's CA for the provider's endpoints ([oidc].ca_file).
        gateway_env = clean_environ(BFF__OIDC__CA_FILE=str(front_ca))
    sandbox_toml = _sandbox_config(credential, options, gateway_url, issuer, work_dir)
    sandbox_argv = [
        sys.executable, "-m", "sandbox", "serve",
        "--config", str(sandbox_toml),
        "--port", str(sandbox_port),
        "--db", ":memory:",
    ]  # fmt: skip
    gateway_argv = [
        str(BFF_SCRIPT), "serve",
        "--config", str(gateway_toml),
        "--host", "127.0.0.1",
        "--port", str(gateway_port),
    ]  # fmt: skip

    def start_gateway(start: int) -> AbstractContextManager[ServerProcess]:
        # The gateway meets the provider and the sandbox only when a user signs in.
        return serving(
            gateway_argv,
            name="the gateway",
            url=gateway_url,
            env=gateway_env,
            cwd=REPO,
            log=work_dir / ("gateway.log" if start == 1 else f"gateway-{start}.log"),
            start_timeout=START_TIMEOUT,
        )

    gateway_process = _Restartable(start_gateway)
    servers: list[AbstractContextManager[ServerProcess]] = [
        serving(
            _provider_argv(node, provider_port, gateway_url, options, front),
            name="oidc-provider",
            url=issuer,
            ready="/.well-known/openid-configuration",
            cwd=HERE,
            log=work_dir / "provider.log",
            start_timeout=START_TIMEOUT,
        ),
        serving(
            sandbox_argv,
            name="the sandbox",
            url=sandbox_url,
            cwd=REPO,
            log=work_dir / "sandbox.log",
            start_timeout=START_TIMEOUT,
        ),
        gateway_process,
    ]
    if nginx is not None and front is not None:
        servers.append(
            serving_front(
                nginx,
                work_dir / "front",
                port=front.port,
                upstream_port=front.upstream_port,
                start_timeout=START_TIMEOUT,
            )
        )
    with ExitStack() as running:
        provider, sandbox, gateway, *fronts = _enter_together(running, *servers)
        yield Stack(
            credential,
            options,
            provider,
            sandbox,
            gateway,
            work_dir,
            front=fronts[0] if fronts else None,
            _gateway_process=gateway_process,
        )


def _enter_together(
    running: ExitStack, *servers: AbstractContextManager[ServerProcess]
) -> list[ServerProcess]:
    """Start ``servers`` at once and wait until all answer; ``running`` stops each one started."""
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        entering = [pool.submit(server.__enter__) for server in servers]
    started: list[ServerProcess] = []
    failures: list[Exception] = []
    for server, future in zip(servers, entering, strict=True):
        try:
            started.append(future.result())
        except Exception as exc:
            failures.append(exc)
        else:
            running.push(server)
    if failures:
        raise failures[0]
    return started


class Stacks:
    """Stacks by configuration, each started when a test first asks for it and kept until
    :meth:`close`, so tests of one configuration share its processes."""

    def __init__(self, node: str, work_dir: Path) -> None:
        self._node = node
        self._work_dir = work_dir
        self._started: dict[tuple[Credential, ProviderOptions], Stack] = {}
        self._running: list[ExitStack] = []

    def get(self, credential: Credential, options: ProviderOptions | None = None) -> Stack:
        key = (credential, options or ProviderOptions())
        if key not in self._started:
            running = ExitStack()
            self._running.append(running)
            work_dir = self._work_dir / f"stack-{len(self._running)}"
            self._started[key] = running.enter_context(running_stack(self._node, work_dir, *key))
        return self._started[key]

    def close(self) -> None:
        """Stop every stack, all at the same time."""
        if not self._running:
            return
        with ThreadPoolExecutor(max_workers=len(self._running)) as pool:
            # Reading the results raises the first failure to stop, if there was one.
            list(pool.map(ExitStack.close, self._running))
