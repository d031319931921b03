"""Real ``redis-server`` processes on free loopback ports: one plain Redis for the test session,
a Redis that speaks only TLS, and a primary with a replica watched by three Sentinels.

Tests that need them carry the ``redis`` marker. Without ``redis-server`` on PATH they skip with
the reason, unless ``REQUIRE_REDIS=1`` (or ``CI=true``) is set: then they fail, so CI cannot
silently skip them.

- :func:`redis_server` (a fixture, registered in ``tests/conftest.py``): the shared plain Redis.
- :func:`make_tls_files` writes a CA made here, a server certificate for 127.0.0.1 and
  localhost, a client certificate, and a second CA that signed neither;
  :func:`tls_redis_server` runs a Redis on TLS alone with them.
- :func:`sentinel_deployment`: a primary, its replica and three Sentinels (quorum 2, a second of
  silence makes a node down); :meth:`SentinelDeployment.failover` switches the primary.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.ports import free_port
from tests.support.processes import POLL_INTERVAL, ServerDidNotStart, serving

_START_TIMEOUT = 10.0
_START_ATTEMPTS = 3
SENTINEL_SERVICE = "bff-sessions"


@dataclass(frozen=True)
class RedisServer:
    """Where a test Redis (or Sentinel) listens."""

    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/0"

    @property
    def address(self) -> str:
        """``host:port``, as ``[sessions].redis_sentinels`` lists a Sentinel."""
        return f"{self.host}:{self.port}"

    def client(self) -> redis.Redis:
        """A plain synchronous client, for the test to look inside (close it after)."""
        return redis.Redis(self.host, self.port, socket_timeout=5.0)


def redis_binary() -> str:
    """The ``redis-server`` to run; skips the test without one (fails it in CI)."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not on PATH (apt-get install redis-server)"
        if os.environ.get("REQUIRE_REDIS") == "1" or os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; REQUIRE_REDIS=1 or CI=true forbids skipping")
        pytest.skip(reason)
    return binary


def _answers_ping(port: int, tls: ssl.SSLContext | None = None) -> bool:
    try:
        with ExitStack() as closing:
            sock = closing.enter_context(socket.create_connection(("127.0.0.1", port), 0.5))
            if tls is not None:
                sock = closing.enter_context(tls.wrap_socket(sock, server_hostname="127.0.0.1"))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start(
    running: ExitStack,
    workdir: Path,
    argv: Callable[[int], list[str]],
    *,
    what: str = "redis-server",
    tls: ssl.SSLContext | None = None,
) -> RedisServer:
    """``argv(port)`` on a free port, entered in ``running`` once it answers PING."""
    failure: ServerDidNotStart | None = None
    # A free port can be taken between choosing and binding it; try a few.
    for _attempt in range(_START_ATTEMPTS):
        server = RedisServer("127.0.0.1", free_port(), tls=tls is not None)
        try:
            running.enter_context(
                serving(
                    argv(server.port),
                    name=f"{what} on {server.address}",
                    url=server.url,
                    ready=partial(_answers_ping, server.port, tls),
                    log=workdir / f"{what}-{server.port}.log",
                    start_timeout=_START_TIMEOUT,
                    grace=5.0,
                )
            )
        except ServerDidNotStart as exc:
            failure = exc
            continue
        return server
    pytest.fail(str(failure))


def _data_node(binary: str, workdir: Path, *options: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not 5 s later
            "--dir", str(workdir),
            *options,
        ]  # fmt: skip

    return argv


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Start `redis-server` on 127.0.0.1:<free port> for the test session; stop it after."""
    binary = redis_binary()
    with tempfile.TemporaryDirectory(prefix="bff-redis-") as tmp, ExitStack() as running:
        yield _start(running, Path(tmp), _data_node(binary, Path(tmp)))


# --- TLS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: a CA, what it signed for the server and a client, and a CA it did not."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path

    def context(self) -> ssl.SSLContext:
        """What a client that trusts :attr:`ca` and shows the client certificate uses."""
        context = ssl.create_default_context(cafile=self.ca)
        context.load_cert_chain(self.client_cert, self.client_key)
        return context


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    common_name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
    names: tuple[x509.GeneralName, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A key and its certificate for a day: a CA's own without ``ca``, else one ``ca`` signed
    for ``usage`` (and the ``names``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer, signer = (ca[0].subject, ca[1]) if ca else (_name(common_name), key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if ca is None:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
    else:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
            )
        )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256()), key


def _write_pem(
    directory: Path, stem: str, pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> tuple[Path, Path]:
    certificate, key = pair
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA made here and what it signs: a server certificate for 127.0.0.1 and localhost, a
    client certificate; and another CA, which signed neither."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _certificate("bff test CA")
    loopback = (x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"))
    server = _certificate("redis", ca, ExtendedKeyUsageOID.SERVER_AUTH, loopback)
    client = _certificate("flows-bff", ca, ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_path, _ = _write_pem(directory, "ca", ca)
    other_ca_path, _ = _write_pem(directory, "other-ca", _certificate("another CA"))
    server_cert, server_key = _write_pem(directory, "server", server)
    client_cert, client_key = _write_pem(directory, "client", client)
    return TlsFiles(ca_path, server_cert, server_key, client_cert, client_key, other_ca_path)


@contextmanager
def tls_redis_server(
    workdir: Path, files: TlsFiles, *, client_certificates: bool
) -> Iterator[RedisServer]:
    """``redis-server`` on TLS alone (``--port 0``) with the certificate ``files`` name; it asks
    for a client certificate signed by the CA when ``client_certificates``."""
    binary = redis_binary()

    def argv(port: int) -> list[str]:
        return [
            *_data_node(binary, workdir)(0),
            "--tls-port", str(port),
            "--tls-cert-file", str(files.server_cert),
            "--tls-key-file", str(files.server_key),
            "--tls-ca-cert-file", str(files.ca),
            "--tls-auth-clients", "yes" if client_certificates else "no",
        ]  # fmt: skip

    with ExitStack() as running:
        yield _start(running, workdir, argv, what="redis-server-tls", tls=files.context())


# --- Sentinel ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SentinelDeployment:
    """Two data nodes, one of them primary, and the Sentinels that say which."""

    service: str
    nodes: tuple[RedisServer, RedisServer]
    sentinels: tuple[RedisServer, ...]

    @property
    def sentinel_addresses(self) -> list[str]:
        return [sentinel.address for sentinel in self.sentinels]

    def primary(self) -> RedisServer:
        """The node the first Sentinel names primary now."""
        with self.sentinels[0].client() as sentinel:
            port = _primary_port(sentinel, self.service)
        return next(node for node in self.nodes if node.port == port)

    def failover(self, timeout: float = 15.0) -> RedisServer:
        """``SENTINEL FAILOVER``, repeated while the Sentinel is not ready for it, then awaited
        until every Sentinel names the other node; returns the new primary."""
        former = self.primary()
        deadline = time.monotonic() + timeout
        with self.sentinels[0].client() as sentinel:
            _poll(
                "the Sentinel to accept SENTINEL FAILOVER",
                partial(_failover, sentinel, self.service),
                deadline,
            )
        for sentinel_server in self.sentinels:
            with sentinel_server.client() as sentinel:
                _poll(
                    f"{sentinel_server.address} to name the new primary",
                    lambda: _primary_port(sentinel, self.service) != former.port,
                    deadline,
                )
        return self.primary()

    def wait_until_replica(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Until ``node`` is a replica in sync with its primary (a former primary becomes one
        some seconds after a failover, when a Sentinel reconfigures it)."""
        _wait_replicating(node, time.monotonic() + timeout)


def _poll(what: str, condition: Callable[[], bool], deadline: float) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_INTERVAL)


def _failover(sentinel: redis.Redis, service: str) -> bool:
    try:
        sentinel.execute_command("SENTINEL", "FAILOVER", service)
    except redis.ResponseError:  # NOGOODSLAVE: it has not seen the replica ready yet
        return False
    return True


def _primary_port(sentinel: redis.Redis, service: str) -> int:
    """The port of the primary ``sentinel`` names (every node listens on 127.0.0.1)."""
    _host, port = sentinel.sentinel_get_master_addr_by_name(service)
    return int(port)


def _wait_replicating(node: RedisServer, deadline: float) -> None:
    def replicating() -> bool:
        info = client.info("replication")
        return info["role"] == "slave" and info.get("master_link_status") == "up"

    with node.client() as client:
        _poll(f"{node.address} to replicate", replicating, deadline)


@contextmanager
def sentinel_deployment(
    workdir: Path, service: str = SENTINEL_SERVICE
) -> Iterator[SentinelDeployment]:
    """A primary, its replica (in sync) and three Sentinels watching them (quorum 2; a node
    silent for a second is down; a failover gives up after three), all on free ports. Entered
    once every Sentinel knows the replica and the other two Sentinels."""
    binary = redis_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as running:
        primary = _start(running, workdir, _data_node(binary, workdir))
        replica = _start(
            running,
            workdir,
            _data_node(binary, workdir, "--replicaof", primary.host, str(primary.port)),
        )
        _wait_replicating(replica, time.monotonic() + 10.0)

        def sentinel_argv(port: int) -> list[str]:
            config = workdir / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {service} {primary.host} {primary.port} 2\n"
                f"sentinel down-after-milliseconds {service} 1000\n"
                f"sentinel failover-timeout {service} 3000\n"
            )
            return [binary, str(config), "--sentinel"]

        sentinels = tuple(
            _start(running, workdir, sentinel_argv, what="redis-sentinel") for _ in range(3)
        )
        deadline = time.monotonic() + 20.0
        for sentinel_server in sentinels:
            with sentinel_server.client() as sentinel:
                _poll(
                    f"{sentinel_server.address} to see the whole deployment",
                    partial(_watching, sentinel, service, others=len(sentinels) - 1),
                    deadline,
                )
        yield SentinelDeployment(service, (primary, replica), sentinels)


def _watching(sentinel: redis.Redis, service: str, *, others: int) -> bool:
    master = sentinel.sentinel_master(service)
    replicas = sentinel.sentinel_slaves(service)
    return int(master["num-other-sentinels"]) >= others and any(
        replica.get("master-link-status") == "ok" and not replica["is_sdown"]
        for replica in replicas
    )
