"""The gateway against Redis as it is deployed: on TLS (with a client certificate or without), and
as a primary with a replica behind Sentinels, failed over while two gateways serve traffic."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bff.auth import static_authenticator
from bff.paths import API_PREFIX, CALLBACK_PATH, JWKS_PATH
from bff.settings import SessionsSection
from bff.state import connection
from bff.state.connection import (
    FOLLOW_SECONDS,
    BlockingSentinelConnectionPool,
    PrimarySSLConnection,
    connect,
)
from bff.state.invalidation import CHANNEL
from bff.state.sessions import Session
from tests.support.dev_provider import start_dev_provider
from tests.support.dev_stack import CONFIG
from tests.support.gateway import ALICE, NO_IDP, Running, in_process, make_settings
from tests.support.oidc_login import browser_login
from tests.support.ports import free_ports
from tests.support.processes import BFF_SCRIPT, clean_environ, serving
from tests.support.redis import (
    RedisServer,
    SentinelDeployment,
    TlsFiles,
    make_tls_files,
    sentinel_deployment,
    tls_redis_server,
)
from tests.support.silent import silent_listener

pytestmark = pytest.mark.redis

REDIS_TIMEOUT = 0.5
UPSTREAM_ALLOWANCE = 1.0
"""What a call may spend beside Redis: the sandbox and the gateway's own work, under load."""


def _key_ring(directory: Path) -> str:
    ring = directory / "session-keys"
    ring.write_text(f"test0 {base64.b64encode(os.urandom(32)).decode()}\n")
    return str(ring)


async def _until(
    what: str, condition: Callable[[], bool | Awaitable[bool]], timeout: float
) -> None:
    """Poll ``condition`` (plain or async) until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        done = condition()
        if not isinstance(done, bool):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# --- TLS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsRedis:
    files: TlsFiles
    server_only: RedisServer
    """Redis on TLS, which asks clients for no certificate."""
    mutual: RedisServer
    """Redis on TLS, which asks clients for a certificate its CA signed."""


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    directory = tmp_path_factory.mktemp("tls")
    files = make_tls_files(directory)
    with (
        tls_redis_server(directory, files, client_certificates=False) as server_only,
        tls_redis_server(directory, files, client_certificates=True) as mutual,
    ):
        yield TlsRedis(files, server_only, mutual)


@asynccontextmanager
async def _gateway(tmp_path: Path, **sessions: object) -> AsyncIterator[Running]:
    settings = make_settings(
        sessions={
            "backend": "redis",
            "redis_timeout_seconds": REDIS_TIMEOUT,
            "encryption_keys_file": _key_ring(tmp_path),
            **sessions,
        }
    )
    async with in_process(
        NO_IDP, authenticators=[static_authenticator(ALICE)], settings=settings
    ) as running:
        yield running


async def _sessions_check(running: Running) -> tuple[str, float]:
    """What ``/readyz`` says of the session store, and how long it took to say it."""
    started = time.monotonic()
    ready = await running.client.get("/readyz")
    took = time.monotonic() - started
    check: str = ready.json()["checks"]["sessions"]
    return check, took


async def _keeps_a_session(running: Running) -> None:
    store = running.app.state.signin.sessions.store
    raw_id = await store.create(Session(sub="alice", name="Alice"))
    kept = await store.get(raw_id)
    assert kept is not None and kept.sub == "alice"


async def test_the_store_reaches_redis_on_tls_through_the_configured_ca(
    tls: TlsRedis, tmp_path: Path
) -> None:
    assert tls.server_only.url.startswith("rediss://")
    async with _gateway(
        tmp_path, redis_url=tls.server_only.url, redis_ca_file=str(tls.files.ca)
    ) as running:
        assert (await _sessions_check(running))[0] == "ok"
        await _keeps_a_session(running)


async def test_a_redis_certificate_from_another_ca_fails_readiness_within_the_timeout(
    tls: TlsRedis, tmp_path: Path
) -> None:
    async with _gateway(
        tmp_path, redis_url=tls.server_only.url, redis_ca_file=str(tls.files.other_ca)
    ) as running:
        check, took = await _sessions_check(running)
    assert check.startswith("failing"), check
    assert took < REDIS_TIMEOUT + UPSTREAM_ALLOWANCE, took


async def test_a_redis_that_asks_for_a_client_certificate_gets_the_configured_one(
    tls: TlsRedis, tmp_path: Path
) -> None:
    where = {"redis_url": tls.mutual.url, "redis_ca_file": str(tls.files.ca)}
    async with _gateway(
        tmp_path,
        **where,
        redis_cert_file=str(tls.files.client_cert),
        redis_key_file=str(tls.files.client_key),
    ) as running:
        assert (await _sessions_check(running))[0] == "ok"
        await _keeps_a_session(running)
    async with _gateway(tmp_path, **where) as without_certificate:
        check, took = await _sessions_check(without_certificate)
    assert check.startswith("failing"), check
    assert took < REDIS_TIMEOUT + UPSTREAM_ALLOWANCE, took


# --- Sentinel: the client ------------------------------------------------------------------


async def test_beside_sentinels_the_url_gives_tls_credentials_and_database(
    tls: TlsRedis,
) -> None:
    client = connect(
        SessionsSection(
            backend="redis",
            redis_url="rediss://bff:s3cret@ignored.example:1/2",
            redis_ca_file=str(tls.files.ca),
            redis_sentinels=["127.0.0.1:26379"],
            redis_sentinel_service="sessions",
        )
    )
    pool = client.connection_pool
    try:
        assert pool.connection_class is PrimarySSLConnection
        options = pool.connection_kwargs
        assert (options["username"], options["password"], options["db"]) == ("bff", "s3cret", 2)
        assert options["ssl_ca_certs"] == str(tls.files.ca)
        assert options["ssl_cert_reqs"] == "required" and options["ssl_check_hostname"]
        assert "host" not in options and "port" not in options  # the Sentinels say where
    finally:
        await client.aclose()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[SentinelDeployment]:
    with sentinel_deployment(tmp_path / "redis") as running:
        yield running


def _through(deployment: SentinelDeployment, **sessions: Any) -> SessionsSection:
    """``[sessions]`` naming ``deployment``'s Sentinels, with ``sessions`` on top."""
    through = {
        "backend": "redis",
        "redis_sentinels": deployment.sentinel_addresses,
        "redis_sentinel_service": deployment.service,
        "redis_timeout_seconds": REDIS_TIMEOUT,
    }
    return SessionsSection(**{**through, **sessions})


async def test_through_sentinels_a_burst_waits_for_a_pooled_connection(
    deployment: SentinelDeployment,
) -> None:
    client = connect(_through(deployment, redis_max_connections=1, redis_timeout_seconds=2.0))
    try:
        assert isinstance(client.connection_pool, BlockingSentinelConnectionPool)
        started = time.monotonic()
        # Each BLPOP holds the one connection for 0.2 s; the others wait for it, none fails.
        answers = await asyncio.gather(*(client.blpop(["nothing"], timeout=0.2) for _ in range(3)))
        took = time.monotonic() - started
    finally:
        await client.aclose()
    assert answers == [None, None, None]
    assert took >= 0.55, took


async def test_a_sentinel_that_is_away_costs_at_most_one_timeout(
    deployment: SentinelDeployment,
) -> None:
    (refusing,) = free_ports(1)
    with silent_listener() as silent:
        away = [f"127.0.0.1:{silent}", f"127.0.0.1:{refusing}"]
        client = connect(
            _through(deployment, redis_sentinels=[*away, *deployment.sentinel_addresses])
        )
        try:
            started = time.monotonic()
            assert await client.ping()
            took = time.monotonic() - started
        finally:
            await client.aclose()
    # The silent one costs a timeout, the refusing one nothing: neither is tried again.
    assert took < 2 * REDIS_TIMEOUT, took


async def test_after_a_failover_commands_scripts_and_subscriptions_follow_the_primary(
    deployment: SentinelDeployment,
) -> None:
    former = deployment.primary()
    # Time enough for a command to wait on the server (BLPOP) across the failover.
    client = connect(_through(deployment, redis_timeout_seconds=10.0))
    pubsub = client.pubsub()
    heard: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def listen() -> None:  # as the invalidation listener does, all along
        async for message in pubsub.listen():
            await heard.put(message)

    await pubsub.subscribe("news")
    listener = asyncio.create_task(listen())
    waiting = asyncio.create_task(client.blpop(["jobs"], timeout=8))  # in flight throughout
    try:
        counter = client.register_script("return redis.call('INCR', KEYS[1])")
        assert await counter(keys=["counted"]) == 1
        assert (await asyncio.wait_for(heard.get(), 5.0))["type"] == "subscribe"
        with former.client() as old:
            await _until("BLPOP to wait", lambda: _blocked(old) == 1, 5.0)

        new = await asyncio.to_thread(deployment.failover)
        with new.client() as primary:
            assert primary.script_exists(counter.sha) == [False], "scripts are not replicated"
            # Within FOLLOW_SECONDS the pool cuts its connections to the former primary: the
            # subscription and the waiting command are made again on the new one, well before
            # Sentinel turns the former into a replica and closes its clients (ten seconds on).
            await _until(
                "the subscription and the waiting command on the new primary",
                lambda: primary.pubsub_numsub("news") == [(b"news", 1)] and _blocked(primary) == 1,
                FOLLOW_SECONDS + 3.0,
            )
            assert client.connection_pool.master_address == (new.host, new.port)
            assert (await asyncio.wait_for(heard.get(), 5.0))["type"] == "subscribe"
            primary.lpush("jobs", "job")
            assert list(await asyncio.wait_for(waiting, 5.0)) == [b"jobs", b"job"]

            # EVALSHA answers NOSCRIPT there: the script is loaded again, and runs on the new
            # primary, which holds the count the former one replicated.
            assert await counter(keys=["counted"]) == 2
            assert primary.get("counted") == b"2"
            assert primary.script_exists(counter.sha) == [True]
            primary.publish("news", "from the new primary")
        message = await asyncio.wait_for(heard.get(), 5.0)
        assert message["data"] == b"from the new primary"
    finally:
        waiting.cancel()
        listener.cancel()
        await pubsub.aclose()
        await client.aclose()
    with former.client() as old:
        assert old.info("replication")["role"] == "master", "Sentinel had not demoted it yet"


async def test_a_connection_released_after_the_primary_moved_is_not_used_with_the_former_one(
    deployment: SentinelDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "FOLLOW_SECONDS", 60.0)  # this test calls follow() itself
    client = connect(_through(deployment, redis_timeout_seconds=5.0))
    pool = client.connection_pool
    assert isinstance(pool, BlockingSentinelConnectionPool)
    try:
        former = deployment.primary()
        busy = asyncio.create_task(client.blpop(["nothing"], timeout=3))
        await client.ping()  # a second connection, idle after this
        await asyncio.to_thread(deployment.failover)
        # Two at once: the idle connection, and a new one, which learns where the primary is
        # now (and drops the idle connections to the former: none, both are in use).
        await asyncio.gather(*(client.blpop([key], timeout=0.1) for key in ("a", "b")))
        assert await busy is None  # released now
        # The scenario: three idle connections, two of them still to the former primary.
        assert [c.port for c in pool._available_connections].count(former.port) == 2

        await pool.follow()
        await asyncio.gather(*(client.set(f"written-{n}", n) for n in range(3)))
    finally:
        await client.aclose()
    with deployment.primary().client() as primary:
        assert primary.mget([f"written-{n}" for n in range(3)]) == [b"0", b"1", b"2"]


def test_a_command_on_a_connection_cut_under_it_is_sent_again_not_an_error(
    deployment: SentinelDeployment,
) -> None:
    # As `bff serve` runs: on uvloop, which refuses to write to a closed transport with a
    # RuntimeError (the plain event loop drops the bytes); the pool's follow cuts connections
    # to a former primary whatever they are doing.
    import uvloop

    async def scenario() -> list[bytes | None]:
        client = connect(_through(deployment, redis_timeout_seconds=2.0))
        pool = client.connection_pool
        assert isinstance(pool, BlockingSentinelConnectionPool)
        try:
            await client.set("cut", b"before")
            for each in pool._available_connections:
                connection._cut(each)  # as the follow does to a connection it no longer trusts
            await client.set("cut", b"after")
            return [await client.get("cut")]
        finally:
            await client.aclose()

    assert uvloop.run(scenario()) == [b"after"]


def _blocked(node: redis.Redis) -> int:
    """How many clients wait in a blocking command on ``node``."""
    return int(node.info("clients")["blocked_clients"])


# --- Sentinel: two gateways through a failover ---------------------------------------------

SANDBOX_KEYS = {"ten_acme": "zen_key_dev_acme_rw", "ten_globex": "zen_key_dev_globex_rw"}
ENOUGH_WRITES = 20


@dataclass(frozen=True)
class User:
    name: str
    tenant: str = "ten_acme"
    cluster: str = "plane_dev_us_east_1"
    source: str = "ing_stripe_prod"
    destination: str = "dest_orders_api"
    cookie: str = ""

    @property
    def flows(self) -> str:
        return f"{API_PREFIX}/tenants/{self.tenant}/clusters/{self.cluster}/delivery-flows"


WRITERS = (
    User("alice"),
    User("carol", "ten_globex", "plane_globex_main", "ing_globex_orders", "dest_globex_erp"),
)
READER = User("bob")


@dataclass(frozen=True)
class Stack:
    origin: str
    """The public origin both gateways are configured with, as behind one load balancer."""
    gateways: tuple[str, str]
    sandbox: str

    def headers(self, user: User) -> dict[str, str]:
        """What the dashboard's script sends with each call."""
        return {"Cookie": f"bff_session={user.cookie}", "X-CSRF": "1", "Origin": self.origin}


@dataclass(frozen=True)
class Call:
    method: str
    status: int
    took: float
    at: float
    flow_id: str | None = None


@dataclass
class Traffic:
    calls: list[Call] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def created(self, after: float = 0.0) -> set[str]:
        """The flows whose creation was acknowledged (201) in a call started after ``after``."""
        return {c.flow_id for c in self.calls if c.flow_id is not None and c.at > after}


def _gateway_config(
    directory: Path, stack: Stack, issuer: str, deployment: SentinelDeployment
) -> Path:
    signing_key = directory / "upstream-signing-key.pem"
    signing_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = directory / "bff.toml"
    config.write_text(
        f"""
[bff]
public_origin = "{stack.origin}"
rate_limit_per_minute = 100000

[upstream]
base_url = "{stack.sandbox}"
credential = "internal-jwt"

[internal_jwt]
signing_key_file = "{signing_key}"

[oidc]
issuer = "{issuer}"
client_id = "flows-bff-dev"
client_secret = "dev-only-client-secret"

[sessions]
backend = "redis"
redis_sentinels = {deployment.sentinel_addresses!r}
redis_sentinel_service = "{deployment.service}"
redis_timeout_seconds = {REDIS_TIMEOUT}
encryption_keys_file = "{_key_ring(directory)}"

[cache]
# Long: a list another instance wrote to is fresh only if the invalidation reached it.
ttl_seconds = 60
"""
    )
    return config


@contextmanager
def two_gateways(directory: Path, deployment: SentinelDeployment) -> Iterator[Stack]:
    """The sandbox, the development provider and two ``bff serve`` sharing one config (one
    public origin, one signing key, sessions behind the Sentinels), each a process."""
    first, second, sandbox_port = free_ports(3)
    stack = Stack(
        origin=f"http://127.0.0.1:{first}",
        gateways=(f"http://127.0.0.1:{first}", f"http://127.0.0.1:{second}"),
        sandbox=f"http://127.0.0.1:{sandbox_port}",
    )
    sandbox_argv = [
        sys.executable, "-m", "sandbox", "serve", "--config", CONFIG,
        "--host", "127.0.0.1", "--port", str(sandbox_port), "--db", str(directory / "sandbox.db"),
        "--trusted-issuer", f"{stack.origin}={stack.origin}{JWKS_PATH}",
    ]  # fmt: skip
    with (
        serving(sandbox_argv, name="the sandbox", url=stack.sandbox, log=directory / "sandbox.log"),
        start_dev_provider(redirect_uri=stack.origin + CALLBACK_PATH) as issuer,
        ExitStack() as gateways,
    ):
        config = _gateway_config(directory, stack, issuer, deployment)
        for port in (first, second):
            gateways.enter_context(
                serving(
                    [str(BFF_SCRIPT), "serve", "--config", str(config), "--port", str(port)],
                    name=f"the BFF on port {port}",
                    url=f"http://127.0.0.1:{port}",
                    ready="/readyz",
                    env=clean_environ(),
                    log=directory / f"bff-{port}.log",
                )
            )
        yield stack


def _signed_in(stack: Stack, user: User) -> User:
    """``user`` signed in through the first gateway (the provider sends browsers back there)."""
    with httpx.Client(trust_env=False, timeout=10.0) as browser:
        final = browser_login(browser, stack.origin, user.name)  # back at "/": no console
        assert str(final.url) == stack.origin + "/", final.text
        cookie = browser.cookies.get("bff_session")
        assert cookie, "the callback set no session cookie"
        return dataclasses.replace(user, cookie=cookie)


async def _drive(
    client: httpx.AsyncClient, stack: Stack, user: User, first: int, traffic: Traffic
) -> None:
    """A dashboard tab: list the flows, create one, through each gateway in turn, until told."""
    for n in itertools.count():
        for method in ("GET", "POST"):
            if traffic.stop.is_set():
                return
            body = {"name": f"{user.name}-{first}-{n}", "sourceId": user.source}
            started = time.monotonic()
            try:
                answer = await client.request(
                    method,
                    stack.gateways[(first + n) % 2] + user.flows,
                    headers=stack.headers(user),
                    json={**body, "destinationId": user.destination} if method == "POST" else None,
                )
            except httpx.TimeoutException:
                traffic.calls.append(Call(method, 0, time.monotonic() - started, started))
                continue
            flow_id = answer.json()["id"] if answer.status_code == 201 else None
            took = time.monotonic() - started
            traffic.calls.append(Call(method, answer.status_code, took, started, flow_id))


def _listeners(node: RedisServer) -> int:
    """How many connections listen on the cache invalidation channel at ``node``."""
    with node.client() as client:
        ((_channel, count),) = client.pubsub_numsub(CHANNEL)
    return int(count)


def _sandbox_flow_ids(stack: Stack) -> set[str]:
    """Every flow the backend keeps, asked with its own API keys."""
    found: set[str] = set()
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        for tenant, key in SANDBOX_KEYS.items():
            cursor: str | None = ""
            while cursor is not None:
                page = client.get(
                    f"{stack.sandbox}/v1/tenants/{tenant}/delivery-flows",
                    params={"limit": 100, **({"cursor": cursor} if cursor else {})},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert page.status_code == 200, page.text
                found.update(flow["id"] for flow in page.json()["delivery_flows"])
                cursor = page.json()["next_cursor"]
    return found


async def _seen_through_the_other(client: httpx.AsyncClient, stack: Stack, user: User) -> None:
    """A write through the first gateway shows at once in the second's list, which its cache
    would serve for a minute unless the write's invalidation reached it through Redis."""
    listed = await client.get(stack.gateways[1] + user.flows, headers=stack.headers(user))
    assert listed.status_code == 200, listed.text
    created = await client.post(
        stack.gateways[0] + user.flows,
        headers=stack.headers(user),
        json={"name": "seen-elsewhere", "sourceId": user.source, "destinationId": user.destination},
    )
    assert created.status_code == 201, created.text

    async def listed_there() -> bool:
        page = await client.get(stack.gateways[1] + user.flows, headers=stack.headers(user))
        return created.json()["id"] in [flow["id"] for flow in page.json()["items"]]

    await _until("the second gateway to drop its cached list", listed_there, 3.0)


@pytest.mark.e2e
async def test_two_gateways_ride_out_a_sentinel_failover(
    deployment: SentinelDeployment, tmp_path: Path, record_property: Any
) -> None:
    with two_gateways(tmp_path, deployment) as stack:
        writers = [_signed_in(stack, user) for user in WRITERS]
        former = deployment.primary()
        traffic = Traffic()
        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
            drivers = [
                asyncio.create_task(_drive(client, stack, user, first, traffic))
                for user in writers
                for first in (0, 1)
            ]
            await _until("writes", lambda: len(traffic.created()) >= ENOUGH_WRITES, 10.0)
            failover_at = time.monotonic()
            new = await asyncio.to_thread(deployment.failover)
            # Both gateways move to the new primary within about FOLLOW_SECONDS (their
            # invalidation listeners with them), while Sentinel leaves the former one a writable
            # primary for some seconds more; a user who signs in now must stay signed in.
            await _until("both listeners on the new primary", lambda: _listeners(new) == 2, 5.0)
            reader = await asyncio.to_thread(_signed_in, stack, READER)
            with former.client() as old:
                assert old.info("replication")["role"] == "master", "the window had closed"
            # Sentinel makes the former primary a replica, which closes its clients.
            await asyncio.to_thread(deployment.wait_until_replica, former)
            demoted_at = time.monotonic()
            await _until(
                "writes after that",
                lambda: len(traffic.created(after=demoted_at)) >= ENOUGH_WRITES,
                10.0,
            )
            traffic.stop.set()
            await asyncio.gather(*drivers)

            statuses = Counter(call.status for call in traffic.calls)
            slowest = max(call.took for call in traffic.calls)
            record_property("statuses", dict(statuses))
            print(f"\nstatuses {dict(statuses)}, slowest call {slowest:.2f} s, former primary "
                  f"demoted {demoted_at - failover_at:.1f} s after the failover")  # fmt: skip
            assert set(statuses) <= {200, 201, 503}, statuses
            assert slowest < 2 * REDIS_TIMEOUT + UPSTREAM_ALLOWANCE, slowest

            for user in [*writers, reader]:  # still signed in, on either gateway
                for base in stack.gateways:
                    me = await client.get(
                        base + f"{API_PREFIX}/auth/session", headers=stack.headers(user)
                    )
                    assert me.status_code == 200, (base, user.name, me.text)
            await _seen_through_the_other(client, stack, writers[0])

        for log in tmp_path.glob("bff-*.log"):  # each gateway followed the primary once, calmly
            output = log.read_text()
            assert "Traceback" not in output and output.count("Redis primary moved") == 1, output

        # Every write acknowledged, before the failover or after it, is in the backend.
        kept = _sandbox_flow_ids(stack)
        before = traffic.created() - traffic.created(after=failover_at)
        assert len(before) >= ENOUGH_WRITES and before <= kept, before - kept
        after = traffic.created(after=failover_at)
        assert after <= kept, after - kept
