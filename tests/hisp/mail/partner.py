"""The other HISP in these tests: its own CA and certificates, and ``openssl cms`` doing its
S/MIME (signing and encrypting what it sends us, decrypting and verifying what we send it). Its
SMTP server is a real aiosmtpd sink that records what arrives."""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hisp.certificates import load
from hisp.services import pki, trust
from tests.support.services import free_port

PARTNER = "partner.example.net"

_KEYS: dict[str, rsa.RSAPrivateKey] = {}


def _key(slot: str) -> rsa.RSAPrivateKey:
    # Key generation is the slow part: each slot once per test session.
    if slot not in _KEYS:
        _KEYS[slot] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _KEYS[slot]


def leaf_certificate(
    ca: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    key: rsa.RSAPrivateKey,
    address: str,
    *,
    crl_url: str | None = None,
    subject: str | None = None,
    names: list[x509.GeneralName] | None = None,
    organisation: str | None = None,
) -> x509.Certificate:
    """A Direct address certificate for ``address`` issued by ``ca`` (with a CRL
    distribution point when ``crl_url`` is given; another common name or other subjectAltName
    entries when ``subject`` or ``names`` say so)."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject if subject is not None else address, organisation))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=300))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.SubjectAlternativeName(names or [x509.RFC822Name(address)]), False
        )
    )
    if crl_url is not None:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), False)
    return builder.sign(ca_key, hashes.SHA256())


def _name(cn: str, organisation: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if organisation is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return x509.Name(attributes)


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def openssl(*args: str | Path, data: bytes = b"") -> bytes:
    result = subprocess.run(
        ["openssl", "cms", *map(str, args)], input=data, capture_output=True, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"openssl cms {args[0]} failed: {result.stderr.decode()[-800:]}")
    return result.stdout


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass
class Partner:
    """A partner HISP with one user, ``doc@partner.example.net``."""

    folder: Path
    ca_key: rsa.RSAPrivateKey
    ca: x509.Certificate
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    address: str = f"doc@{PARTNER}"

    @classmethod
    def create(
        cls, folder: Path, *, slot: str = "partner", address: str = f"doc@{PARTNER}"
    ) -> Partner:
        now = datetime.now(UTC)
        ca_key, key = _key(slot + "-ca"), _key(slot)
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{slot} CA"))
            .issuer_name(_name(f"{slot} CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
            .sign(ca_key, hashes.SHA256())
        )
        cert = leaf_certificate(ca, ca_key, key, address)
        folder.mkdir(parents=True, exist_ok=True)
        partner = cls(folder, ca_key, ca, key, cert, address)
        partner.ca_file.write_bytes(_pem(ca))
        partner.cert_file.write_bytes(_pem(cert))
        partner.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return partner

    @property
    def ca_file(self) -> Path:
        return self.folder / "partner-ca.pem"

    @property
    def cert_file(self) -> Path:
        return self.folder / "partner.pem"

    @property
    def key_file(self) -> Path:
        return self.folder / "partner.key"

    def exchange_with(self, domain: str) -> None:
        """What the operators do out of band: we trust the partner's CA for ``domain`` and
        import its user's certificate; the partner gets our CA (see :meth:`our_ca_file`)."""
        trust.import_anchors(self.ca_file.read_bytes(), domain=domain)
        pki.import_certificate(self.cert_file.read_bytes())

    def our_ca_file(self, domain: str) -> Path:
        path = self.folder / f"{domain}-ca.pem"
        path.write_bytes(trust.export_anchor(domain).pem)
        return path

    def recipient_file(self, address: str) -> Path:
        rows = pki.current_certificates(address)
        path = self.folder / f"{address}.pem"
        path.write_bytes(_pem(load(rows[0])))
        return path

    def inner(
        self, *, to: str, subject: str = "Referral", message_id: str, extra: str = "",
        body: str = "Patient summary attached.",
    ) -> bytes:
        return crlf(
            (
                f"From: {self.address}\nTo: {to}\nSubject: {subject}\n"
                f"Message-ID: {message_id}\nDate: Tue, 24 Nov 2026 06:00:00 +0000\n{extra}"
                f"MIME-Version: 1.0\nContent-Type: text/plain\n\n{body}\n"
            ).encode()
        )

    def protect(self, inner: bytes, *, to: str, sign: bool = True, encrypt: bool = True,
                signer: Partner | None = None, binary: bool = False) -> bytes:
        """What the partner sends: wrapped, signed by ``signer`` (default: itself), encrypted
        to ``to``'s certificate at our HISP. ``binary``: openssl keeps the bytes as they are
        (its text mode ends a line at a NUL); ``inner`` must be CRLF-canonical then."""
        content = b"Content-Type: message/rfc822\r\n\r\n" + inner
        mode = ["-binary"] if binary else []
        if sign:
            who = signer or self
            content = crlf(
                openssl("-sign", "-signer", who.cert_file, "-inkey", who.key_file, "-md",
                        "sha256", *mode, data=content)
            )
        if not encrypt:
            headers = inner.split(b"\r\n\r\n", 1)[0]
            return headers + b"\r\n" + content
        return crlf(
            openssl(
                "-encrypt", "-aes256", "-from", self.address, "-to", to, "-subject", "Referral",
                *mode, self.recipient_file(to), data=content,
            )
        )

    def open(self, wire: bytes, *, our_domain: str) -> bytes:
        """Decrypt with the partner's key, verify our signature against our CA, and unwrap the
        message/rfc822 the signature covers."""
        signed = openssl("-decrypt", "-recip", self.cert_file, "-inkey", self.key_file, data=wire)
        content = crlf(
            openssl("-verify", "-purpose", "smimesign", "-CAfile", self.our_ca_file(our_domain),
                    data=signed)
        )
        head, _, body = content.partition(b"\r\n\r\n")
        assert b"message/rfc822" in head.lower(), head
        return body


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class SinkHandler:
    """Records every message; answers with ``reply`` (``250 OK`` unless a test says else)."""

    messages: list[Received] = field(default_factory=list)
    reply: str = "250 OK"
    arrived: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.reply.startswith("250"):
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
            self.arrived.set()
        return self.reply


class Sink:
    def __init__(self) -> None:
        self.handler = SinkHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=free_port())

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.controller.port}"

    def __enter__(self) -> Sink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
