"""The STARTTLS certificate of the SMTP listeners.

Production sets ``HISP_TLS_CERT_FILE`` / ``HISP_TLS_KEY_FILE``. The quick start has neither, so
a self-signed certificate for ``HISP_HOSTNAME`` is generated once into the data folder: backbone
TLS between HISPs is opportunistic (RFC 3207) and Direct's security comes from S/MIME, so a
self-signed transport certificate is acceptable there and better than plaintext.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings

log = logging.getLogger(__name__)


def ensure_certificate() -> tuple[Path, Path]:
    """The (certificate, key) paths to use, generating a self-signed pair when the configured
    files are the defaults in the data folder and do not exist yet."""
    cert = Path(settings.HISP_TLS_CERT_FILE)
    key = Path(settings.HISP_TLS_KEY_FILE)
    if cert.exists() and key.exists():
        return cert, key
    default_dir = Path(settings.DATA_DIR) / "tls"
    if cert.parent != default_dir or key.parent != default_dir:
        # An operator named these files: never paper over a missing production certificate.
        raise FileNotFoundError(f"TLS certificate or key not found: {cert}, {key}")
    write_self_signed(cert, key, hostname=settings.HISP_HOSTNAME)
    log.warning(
        "generated a self-signed STARTTLS certificate in %s; production should set "
        "HISP_TLS_CERT_FILE and HISP_TLS_KEY_FILE",
        default_dir,
    )
    return cert, key


def server_context() -> ssl.SSLContext:
    cert, key = ensure_certificate()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def write_self_signed(cert_path: Path, key_path: Path, *, hostname: str) -> None:
    """A self-signed certificate for ``hostname`` and its key (mode 0600), as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.now(UTC)
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        san = x509.DNSName(hostname)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Written with mode 0600 from the start, then renamed into place so that concurrent
    # starters (SMTP and quick start) never read a half-written key.
    tmp_key = key_path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    tmp_cert = cert_path.with_suffix(f".{os.getpid()}.tmp")
    tmp_cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_key, key_path)
    os.replace(tmp_cert, cert_path)
