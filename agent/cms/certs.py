"""Certificate parsing shared by the CMS layers, cached so a busy agent parses each once."""

from __future__ import annotations

from functools import lru_cache

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent.cms import der
from agent.errors import AgentError, Code


@lru_cache(maxsize=4096)
def load_der(der: bytes) -> x509.Certificate:
    """A certificate from DER; the same bytes give the same object (path-validation caches
    keyed on it keep working across messages)."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        # Names and serial are parsed lazily; a broken one is malformed input, found here
        # rather than deep inside matching or path building.
        certificate.issuer.public_bytes()
        certificate.subject.public_bytes()
        return certificate
    except (ValueError, x509.InvalidVersion) as exc:
        raise AgentError(Code.MALFORMED, "unparseable certificate") from exc


@lru_cache(maxsize=4096)
def to_asn1(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))


@lru_cache(maxsize=4096)
def issuer_der(certificate: x509.Certificate) -> bytes:
    return certificate.issuer.public_bytes()


@lru_cache(maxsize=4096)
def subject_key_identifier(certificate: x509.Certificate) -> bytes | None:
    try:
        ext = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except (x509.ExtensionNotFound, ValueError):
        return None
    return ext.value.digest


def matches_issuer_serial(
    certificate: x509.Certificate, issuer: asn1_x509.Name, serial: int
) -> bool:
    """RFC 5652 section 10.2.4 IssuerAndSerialNumber match; names compare as X.509 names
    (RFC 5280 section 7.1), not byte for byte, when the bytes differ."""
    if certificate.serial_number != serial:
        return False
    mine = issuer_der(certificate)
    try:
        if mine == issuer.dump():
            return True
        return bool(asn1_x509.Name.load(mine) == issuer)
    except (ValueError, TypeError, KeyError):
        return False  # an unparseable name in the message names no certificate of ours


@lru_cache(maxsize=4096)
def cert_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


@lru_cache(maxsize=4096)
def issuer_and_serial(certificate: x509.Certificate) -> bytes:
    """DER IssuerAndSerialNumber (RFC 5652 section 10.2.4), the issuer copied byte for byte."""
    return der.sequence(issuer_der(certificate), der.integer(certificate.serial_number))
