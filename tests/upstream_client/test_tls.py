"""Mutual TLS with the default transport, against a loopback HTTPS server with its own CA."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.backend import TENANT, flow_json, serving_on_loopback
from upstream_client import APIConnectionError, BackendClient, RetryConfig, TLSConfig

ONE_ATTEMPT = RetryConfig(max_attempts=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class Pki:
    """A throwaway CA with one server and one client certificate, written as PEM files."""

    def __init__(self, root: Path) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("test ca"))
            .issuer_name(_name("test ca"))
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_cert = ca_cert
        self.ca_file = root / "ca.pem"
        self.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        self.server_cert, self.server_key = self._leaf(root, "server", server=True)
        self.client_cert, self.client_key = self._leaf(root, "client", server=False)

    def _leaf(self, root: Path, name: str, *, server: bool) -> tuple[Path, Path]:
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(self.ca_key, hashes.SHA256())
        cert_file, key_file = root / f"{name}.pem", root / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_file)
        return cert_file, key_file


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[tuple[str, list[str]]]:
    peers: list[str] = []

    async def flow(request: web.Request) -> web.Response:
        transport = request.transport
        assert transport is not None
        peer = transport.get_extra_info("peercert")
        peers.append(dict(x[0] for x in peer["subject"])["commonName"])
        return web.json_response(flow_json())

    app = web.Application()
    app.router.add_get("/v1/tenants/{tid}/delivery-flows/{fid}", flow)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_file))
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    async with serving_on_loopback(app, context) as port:
        yield f"https://127.0.0.1:{port}", peers


async def test_client_certificate_is_presented(
    pki: Pki, mtls_server: tuple[str, list[str]]
) -> None:
    base_url, peers = mtls_server
    tls = TLSConfig(
        cert_file=str(pki.client_cert), key_file=str(pki.client_key), ca_file=str(pki.ca_file)
    )
    async with BackendClient(base_url, tls=tls) as client:
        flow = await client.get_flow(TENANT, "flow_1", token="t")
    assert flow.id == "flow_1"
    assert peers == ["client"]


async def test_without_a_client_certificate_the_server_refuses(
    pki: Pki, mtls_server: tuple[str, list[str]]
) -> None:
    base_url, peers = mtls_server
    async with BackendClient(
        base_url, tls=TLSConfig(ca_file=str(pki.ca_file)), retries=ONE_ATTEMPT
    ) as client:
        with pytest.raises(APIConnectionError):
            await client.get_flow(TENANT, "flow_1", token="t")
    assert peers == []


async def test_an_unknown_server_ca_is_refused(
    pki: Pki, mtls_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    base_url, peers = mtls_server
    (tmp_path / "other").mkdir()
    other = Pki(tmp_path / "other")
    tls = TLSConfig(
        cert_file=str(pki.client_cert), key_file=str(pki.client_key), ca_file=str(other.ca_file)
    )
    async with BackendClient(base_url, tls=tls, retries=ONE_ATTEMPT) as client:
        with pytest.raises(APIConnectionError):
            await client.get_flow(TENANT, "flow_1", token="t")
    assert peers == []


def test_certificate_and_key_go_together() -> None:
    with pytest.raises(ValueError):
        TLSConfig(cert_file="client.pem")
    with pytest.raises(ValueError):
        TLSConfig(key_file="client.key")
