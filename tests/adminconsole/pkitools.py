"""Certificates made by the tests with cryptography, stored as the models store them."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hisp.models import Certificate


@dataclass(frozen=True)
class Made:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str, *, days: int = 3650) -> Made:
    # P-256 keys: fast to make, and the console only reads certificates.
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Made(certificate, key)


def make_leaf(issuer: Made, address: str, *, days: int = 540) -> Made:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(address))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return Made(certificate, key)


def store(made: Made, *, source: str, binding: str | None = None, **fields: object) -> Certificate:
    certificate = made.certificate
    is_ca = binding is None
    return Certificate.objects.create(
        der=made.der,
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        serial=format(certificate.serial_number, "x"),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        fingerprint_sha256=made.fingerprint,
        binding=binding or Certificate.Binding.CA,
        bound_name="" if is_ca else str(fields.pop("bound_name", "")),
        source=source,
        **fields,
    )


def make_sm2_ca_pem(where: Path) -> bytes:
    """A self-signed CA whose SM2 key this HISP cannot use, made by openssl (cryptography makes
    none): what a partner on another curve might publish."""
    key, cert = where / "sm2.key", where / "sm2-ca.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "SM2", "-out", str(key)], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "req", "-x509", "-new", "-key", str(key), "-subj",
                    "/CN=Odd Curve Partner CA", "-days", "30", "-addext",
                    "basicConstraints=critical,CA:TRUE", "-out", str(cert)],
                   check=True, capture_output=True)
    return cert.read_bytes()
