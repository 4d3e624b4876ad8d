"""A bundle URL staff gave as https is fetched over https to the end: a redirect to plain http
is refused, as the publisher's redirect would hand an unsigned bundle's anchors to anyone on
the path. Before, the redirect was followed and whatever the http answer listed was trusted.
A real TLS server on loopback, its certificate trusted through ``SSL_CERT_FILE``."""

from __future__ import annotations

import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hisp.models import TrustBundle
from hisp.services import identity, trust
from tests.adminconsole import pkitools
from tests.hisp.pki.support import bundle_server
from tests.hisp.test_trust_review_anchors import _p7b


def _tls_files(where: Path) -> tuple[Path, Path, Path]:
    """(CA PEM, server certificate PEM, server key PEM) for 127.0.0.1."""
    ca = pkitools.make_ca("Loopback Test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    files = where / "ca.pem", where / "server.pem", where / "server.key"
    files[0].write_bytes(ca.pem)
    files[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return files


@contextmanager
def _tls_server(where: Path, *, redirect_to: str, body: bytes = b"") -> Iterator[str]:
    """``/start`` redirects to ``redirect_to`` (a path here, or a full URL); ``/bundle.p7b``
    serves ``body``. Yields the server's base URL."""
    _ca, cert, key = _tls_files(where)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path == "/start":
                self.send_response(302)
                self.send_header("Location", redirect_to)
                payload = b""
            else:
                self.send_response(200)
                self.send_header("Content-Type", "application/pkcs7-mime")
                payload = body
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_https_bundle_redirected_to_plain_http_is_refused(
    db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    domain = identity.add_domain("hospital.example.org")
    with bundle_server() as plain:
        plain.body = _p7b(pkitools.make_ca("Injected CA").certificate)
        with _tls_server(tmp_path, redirect_to=plain.url) as base:
            with pytest.raises(trust.BundleFetchError, match="plain http"):
                trust.add_bundle(base + "/start", domain=domain.name)
        assert plain.hits == 0
    assert not TrustBundle.objects.exists()


def test_an_https_bundle_redirected_within_https_is_fetched(
    db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    domain = identity.add_domain("hospital.example.org")
    partner = pkitools.make_ca("Partner CA")
    with _tls_server(tmp_path, redirect_to="/bundle.p7b", body=_p7b(partner.certificate)) as base:
        outcome = trust.add_bundle(base + "/start", domain=domain.name)
    assert outcome.added == [partner.fingerprint]
