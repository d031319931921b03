"""The gateway, the sandbox backend and panva's ``oidc-provider``, as real processes on loopback.

:func:`running_stack` starts the three on free ports, configured for each other: the provider
(``provider.mjs``) registers the gateway as its one client, the gateway signs users in there, and
the sandbox trusts whoever signs the upstream credential: the provider in credential mode
``relay`` (its JWT access tokens for the API), the gateway in ``internal-jwt`` (the tokens it
mints, verified with its published keys).

:func:`interop_toolchain` says whether Node, npm and the installed provider are there: without
them the interoperability tests skip, unless ``REQUIRE_INTEROP=1`` (or ``CI=true``) is set; then
they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from bff.paths import API_PREFIX, CALLBACK_PATH, CLIENT_JWKS_PATH, JWKS_PATH
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


def interop_toolchain() -> str:
    """The ``node`` binary; skips the test (fails it when required) if anything is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        reason = "node and npm are not on PATH (apt-get install nodejs npm)"
    elif not PROVIDER_PACKAGE.exists():
        reason = "oidc-provider is not installed (npm ci --prefix tests/interop, or make test)"
    else:
        return node
    if interop_required():
        pytest.fail(f"{reason}; REQUIRE_INTEROP=1 or CI=true forbids skipping")
    pytest.skip(reason)


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
    from the gateway's client JWKS."""
    require_par: bool = False
    """The provider takes only pushed authorization requests."""
    par: str = "never"
    """The gateway's ``[oidc].par``."""


@dataclass
class Stack:
    """The three processes of one configuration, and where they listen."""

    credential: Credential
    options: ProviderOptions
    provider: ServerProcess
    sandbox: ServerProcess
    gateway: ServerProcess

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

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
        """What all three printed, for the message of a failed assertion."""
        return "\n".join(
            f"--- {name} ---\n{process.output()}"
            for name, process in (
                ("provider", self.provider),
                ("gateway", self.gateway),
                ("sandbox", self.sandbox),
            )
        )


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
    if options.client_auth == "private_key_jwt":
        authorization += '\nclient_auth = "private_key_jwt"\nclient_key_file = "client-key.pem"'
    authorization += f'\npar = "{options.par}"'

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
    path = work_dir / "sandbox.toml"
    path.write_text(
        f"""
[sandbox]
host = "127.0.0.1"
{SANDBOX_CATALOG}
[[sandbox.trusted_issuers]]
issuer = "{trusted}"
jwks_uri = "{jwks_uri}"
audience = "{API_AUDIENCE}"
algorithms = {json.dumps(algorithms)}
"""
    )
    return path


def _provider_argv(node: str, port: int, gateway_url: str, options: ProviderOptions) -> list[str]:
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
    if options.client_auth != "client_secret_basic":
        argv += ["--client-auth", options.client_auth]
        argv += ["--jwks-uri", gateway_url + CLIENT_JWKS_PATH]
    return argv


@contextmanager
def running_stack(
    node: str, work_dir: Path, credential: Credential, options: ProviderOptions
) -> Iterator[Stack]:
    """Provider, sandbox and gateway on free loopback ports, all answering; stopped after."""
    provider_port, sandbox_port, gateway_port = free_ports(3)
    issuer = f"http://127.0.0.1:{provider_port}"
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    work_dir.mkdir(parents=True, exist_ok=True)
    gateway_toml = _gateway_config(credential, options, gateway_url, issuer, sandbox_url, work_dir)
    if options.client_auth == "private_key_jwt":
        # What an operator does: bff keys writes the key the configuration names.
        subprocess.run(
            [str(BFF_SCRIPT), "keys", "--config", str(gateway_toml)],
            check=True,
            capture_output=True,
            env=clean_environ(),
        )
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
    with ExitStack() as running:
        provider, sandbox, gateway = _enter_together(
            running,
            serving(
                _provider_argv(node, provider_port, gateway_url, options),
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
            # The gateway meets the provider and the sandbox only when a user signs in.
            serving(
                gateway_argv,
                name="the gateway",
                url=gateway_url,
                env=clean_environ(),
                cwd=REPO,
                log=work_dir / "gateway.log",
                start_timeout=START_TIMEOUT,
            ),
        )
        yield Stack(credential, options, provider, sandbox, gateway)


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
