"""Between ``cryptography`` certificates and ``Certificate`` rows: parsing, fingerprints, names."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.utils import CryptographyDeprecationWarning

from hisp.models import Certificate


class CertificateFormatError(ValueError):
    """The bytes are not a certificate (or bundle of certificates) we can read."""


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 fingerprint as stored: lower-case hex without separators."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def display_fingerprint(hex_digest: str) -> str:
    """The form read out on the phone when two HISPs exchange anchors: ``AB:CD:...``."""
    upper = hex_digest.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def to_pem(certificates: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


@contextmanager
def lenient_serials() -> Iterator[None]:
    """Real-world anchors in published bundles have non-positive serials (RFC 5280 4.1.2.2 says
    positive) and bundles are often BER with unsorted SETs; their communities still publish them,
    so reading them is not worth a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        warnings.filterwarnings("ignore", message="PKCS#7 certificates could not be parsed as DER")
        yield


def load(row: Certificate) -> x509.Certificate:
    with lenient_serials():
        return x509.load_der_x509_certificate(bytes(row.der))


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Certificates from PEM (certificates or PKCS#7), DER certificate or DER PKCS#7."""
    stripped = data.strip()  # only for PEM: DER may well end in a byte that looks like space
    if not stripped:
        raise CertificateFormatError("empty file")
    if stripped.startswith(b"-----BEGIN"):
        if b"-----BEGIN PKCS7-----" in stripped or b"-----BEGIN CMS-----" in stripped:
            try:
                with lenient_serials():
                    return list(pkcs7.load_pem_pkcs7_certificates(stripped))
            except ValueError as exc:
                raise CertificateFormatError(f"not a PEM PKCS#7 bundle ({exc})") from None
        try:
            found = list(x509.load_pem_x509_certificates(stripped))
        except ValueError:
            found = []
        if not found:
            raise CertificateFormatError("no PEM certificate in the file")
        return found
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    try:
        with lenient_serials():
            return list(pkcs7.load_der_pkcs7_certificates(data))
    except ValueError:
        raise CertificateFormatError(
            "not a certificate or PKCS#7 bundle (PEM or DER expected)"
        ) from None


def san_names(certificate: x509.Certificate) -> tuple[list[str], list[str]]:
    """(rfc822Names, dNSNames) of the subjectAltName, lower-cased domain parts."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    emails = []
    for value in san.get_values_for_type(x509.RFC822Name):
        local, _, domain = value.rpartition("@")
        emails.append(f"{local}@{domain.lower()}" if local else value.lower())
    return emails, [d.lower().rstrip(".") for d in san.get_values_for_type(x509.DNSName)]


def is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def row_fields(certificate: x509.Certificate) -> dict[str, object]:
    """The columns of a ``Certificate`` row that come from the certificate itself."""
    with lenient_serials():
        serial = format(certificate.serial_number, "x")
    return {
        "der": certificate.public_bytes(serialization.Encoding.DER),
        "subject": certificate.subject.rfc4514_string()[:1024],
        "issuer": certificate.issuer.rfc4514_string()[:1024],
        "serial": serial,
        "not_before": certificate.not_valid_before_utc,
        "not_after": certificate.not_valid_after_utc,
        "fingerprint_sha256": fingerprint(certificate),
    }


def anchor_row(certificate: x509.Certificate) -> Certificate:
    """The row for a trust anchor: an existing row with the same fingerprint (our own CA, or an
    anchor another domain already imported), else a new one."""
    existing = Certificate.objects.filter(fingerprint_sha256=fingerprint(certificate)).first()
    if existing is not None:
        return existing
    return Certificate.objects.create(
        **row_fields(certificate),
        binding=Certificate.Binding.CA,
        bound_name=certificate.subject.rfc4514_string()[:320],
        source=Certificate.Source.ANCHOR,
    )
