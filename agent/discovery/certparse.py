"""Reading certificates out of what DNS, LDAP and HTTP give us.

Publishers use several encodings for the same thing: a DER certificate (RFC 4398 PKIX, LDAP
``userCertificate;binary``), a degenerate PKCS#7 SignedData holding certificates (RFC 4523
``userSMIMECertificate`` and many caIssuers URLs, RFC 5280 4.2.2.1), or PEM text. Whatever does
not parse is skipped with a note, never raised: one bad record must not hide a good one.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import pkcs7


@dataclass(frozen=True)
class Parsed:
    certificates: tuple[x509.Certificate, ...]
    notes: tuple[str, ...]


def parse_blob(data: bytes, *, origin: str) -> Parsed:
    """Certificates in ``data`` (DER, PKCS#7 certs-only in DER or PEM, or PEM certificates)."""
    if not data:
        return Parsed((), (f"{origin}: empty certificate data",))
    stripped = data.lstrip()
    if stripped.startswith(b"-----BEGIN"):
        return _parse_pem(stripped, origin=origin)
    try:
        return _checked((x509.load_der_x509_certificate(data),), origin=origin)
    except ValueError:
        pass
    try:
        found = tuple(pkcs7.load_der_pkcs7_certificates(data))
    except ValueError:
        return Parsed((), (f"{origin}: not a DER certificate or PKCS#7 bundle, skipped",))
    if not found:
        return Parsed((), (f"{origin}: PKCS#7 bundle holds no certificate",))
    return _checked(found, origin=origin)


def _checked(certificates: tuple[x509.Certificate, ...], *, origin: str) -> Parsed:
    """Keep the certificates whose extensions decode.

    cryptography parses extensions lazily; forcing it here means a certificate with a broken
    extension is reported as unparsable by discovery instead of failing later in path checks.
    """
    kept: list[x509.Certificate] = []
    notes: list[str] = []
    for certificate in certificates:
        try:
            certificate.extensions  # noqa: B018 - evaluated for its parse errors
        except ValueError as exc:
            notes.append(f"{origin}: certificate extensions do not parse ({exc}), skipped")
            continue
        kept.append(certificate)
    return Parsed(tuple(kept), tuple(notes))


def _parse_pem(data: bytes, *, origin: str) -> Parsed:
    if b"-----BEGIN PKCS7-----" in data:
        try:
            return _checked(tuple(pkcs7.load_pem_pkcs7_certificates(data)), origin=origin)
        except ValueError:
            return Parsed((), (f"{origin}: PEM PKCS#7 does not parse, skipped",))
    try:
        return _checked(tuple(x509.load_pem_x509_certificates(data)), origin=origin)
    except ValueError:
        return Parsed((), (f"{origin}: PEM certificate does not parse, skipped",))


def fingerprint(certificate: x509.Certificate) -> bytes:
    return certificate.fingerprint(hashes.SHA256())


def unique(certificates: list[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """Drop repeats (the same certificate published twice), keeping first-seen order."""
    seen: set[bytes] = set()
    kept: list[x509.Certificate] = []
    for certificate in certificates:
        key = fingerprint(certificate)
        if key not in seen:
            seen.add(key)
            kept.append(certificate)
    return tuple(kept)
