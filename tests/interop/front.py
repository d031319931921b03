"""A TLS-terminating front for the provider: nginx on loopback, as a deployment puts one.

The front serves HTTPS with a certificate for ``127.0.0.1`` from a CA made for the test
(:func:`write_front_certificates`), asks every client for its certificate without checking its
chain (``ssl_verify_client optional_no_ca``: the provider decides which certificates it trusts
for which client), and passes the certificate it saw to the provider in the ``x-ssl-client-cert``
header, URL-encoded PEM (``$ssl_client_escaped_cert``). ``Host`` and ``X-Forwarded-Proto`` go
along, so the provider knows the URL the request was sent to (oidc-provider's "Trusting TLS
offloading proxies").

:func:`nginx_binary` finds nginx; without it the tests that need the front skip, unless
``REQUIRE_INTEROP=1`` or ``CI=true`` (CI installs ``nginx-light``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.processes import ServerProcess, serving

LOOPBACK = "127.0.0.1"
CERTIFICATE_HEADER = "x-ssl-client-cert"
"""Where the front puts the client's certificate; ``provider.mjs`` reads it there."""
FRONT_CA = "front-ca.pem"
"""The CA that signed the front's certificate, in the front's folder."""
ACCESS_LOG = "access.log"
"""One line per request: method, path, status and the client certificate's subject, as
``POST /token 200 client="CN=flows-bff-interop"`` (empty quotes: no certificate)."""

NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    log_format front '$request_method $uri $status client="$ssl_client_s_dn"';
    access_log {root}/{access_log} front;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen {host}:{port} ssl;
        ssl_certificate {root}/front-cert.pem;
        ssl_certificate_key {root}/front-key.pem;
        ssl_verify_client optional_no_ca;
        location / {{
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header {header} $ssl_client_escaped_cert;
            proxy_pass http://{host}:{upstream_port};
            proxy_redirect off;
            # Answers stay in memory: the workers, which drop privileges, write no files.
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    return shutil.which("nginx", path=search)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_front_certificates(directory: Path) -> Path:
    """A CA, and the front's key and certificate for ``127.0.0.1`` signed by it, in
    ``directory``; the CA certificate's path (what the front's clients trust)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Flows interop front CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(LOOPBACK))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / FRONT_CA
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "front-cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "front-key.pem").write_bytes(_pem(key))
    (directory / "front-key.pem").chmod(0o600)
    return ca_path


def _listening(port: int) -> Callable[[], bool]:
    def listening() -> bool:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return True
        except OSError:
            return False

    return listening


def serving_front(
    nginx: str, directory: Path, *, port: int, upstream_port: int, start_timeout: float
) -> AbstractContextManager[ServerProcess]:
    """nginx on ``https://127.0.0.1:port`` in front of ``http://127.0.0.1:upstream_port``, with
    the certificates :func:`write_front_certificates` left in ``directory``."""
    conf = directory / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            root=directory,
            host=LOOPBACK,
            port=port,
            upstream_port=upstream_port,
            header=CERTIFICATE_HEADER,
            access_log=ACCESS_LOG,
        )
    )
    return serving(
        [nginx, "-p", str(directory), "-c", str(conf)],
        name="the TLS front (nginx)",
        url=f"https://{LOOPBACK}:{port}",
        ready=_listening(port),
        log=directory / "nginx.log",
        start_timeout=start_timeout,
    )
