"""Small real certificates for the trust banner (a CA and a signer it issued)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hisp.models import Certificate


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])


def certificate_row(*, cn: str, org: str, binding: str, bound_name: str) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn, org)).issuer_name(_name(cn, org))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return Certificate.objects.create(
        der=cert.public_bytes(serialization.Encoding.DER), subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(), serial=f"{cert.serial_number:x}",
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(), binding=binding,
        bound_name=bound_name, source=Certificate.Source.DISCOVERED,
    )
