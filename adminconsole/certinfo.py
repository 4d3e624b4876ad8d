"""What a staff member needs to see of a certificate, read from its DER.

Only public data: the certificate itself never carries key material, and nothing here looks at
``PrivateKey`` rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

# RFC 5280 4.2.1.3 names, in the order the bit string defines them.
_KEY_USAGE_FLAGS = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "nonRepudiation"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)
_EKU_NAMES = {
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}


PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


class NotACertificate(ValueError):
    """The bytes are neither a PEM nor a DER X.509 certificate."""


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    issuer: str
    serial_hex: str
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    email_sans: tuple[str, ...]
    dns_sans: tuple[str, ...]
    key_usage: tuple[str, ...]
    extended_key_usage: tuple[str, ...]
    is_ca: bool
    public_key: str
    policies: tuple[str, ...]

    @property
    def fingerprint_colons(self) -> str:
        """The fingerprint as read out over the phone: pairs of upper-case hex digits."""
        upper = self.fingerprint_sha256.upper()
        return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def load(data: bytes) -> x509.Certificate:
    """One certificate from PEM or DER bytes; ``NotACertificate`` for anything else."""
    stripped = data.strip()
    if stripped.startswith(b"-----") and not stripped.startswith(b"-----BEGIN CERTIFICATE-----"):
        raise NotACertificate("the PEM block is not a CERTIFICATE")
    try:
        if stripped.startswith(b"-----BEGIN CERTIFICATE-----"):
            certificate = x509.load_pem_x509_certificate(stripped)
        else:
            certificate = x509.load_der_x509_certificate(data)
        # Names and extensions parse lazily; a broken one (a name that is not UTF-8, say) is
        # reported here, not later as a server error on a page.
        certificate.subject, certificate.issuer, certificate.extensions  # noqa: B018
    except ValueError:
        raise NotACertificate("not a PEM or DER X.509 certificate") from None
    return certificate


def describe(certificate: x509.Certificate) -> CertificateInfo:
    der = certificate.public_bytes(serialization.Encoding.DER)
    extensions = certificate.extensions
    return CertificateInfo(
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        serial_hex=format(certificate.serial_number, "x"),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        email_sans=_sans(extensions, x509.RFC822Name),
        dns_sans=_sans(extensions, x509.DNSName),
        key_usage=_key_usage(extensions),
        extended_key_usage=_extended_key_usage(extensions),
        is_ca=_is_ca(extensions),
        public_key=_public_key(certificate),
        policies=_policies(extensions),
    )


def describe_der(der: bytes) -> CertificateInfo:
    return describe(load(der))


def normalise_fingerprint(text: str) -> str:
    """Lower-case hex without separators, as an operator may type it with colons or spaces."""
    return "".join(ch for ch in text.lower() if ch not in ": \t-")


def _sans(extensions: x509.Extensions, kind: type[x509.GeneralName]) -> tuple[str, ...]:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(str(value) for value in san.get_values_for_type(kind))  # type: ignore[arg-type]


def _key_usage(extensions: x509.Extensions) -> tuple[str, ...]:
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return ()
    names = [label for attribute, label in _KEY_USAGE_FLAGS if getattr(usage, attribute)]
    # encipherOnly/decipherOnly are only defined when keyAgreement is set (RFC 5280 4.2.1.3).
    if usage.key_agreement:
        if usage.encipher_only:
            names.append("encipherOnly")
        if usage.decipher_only:
            names.append("decipherOnly")
    return tuple(names)


def _extended_key_usage(extensions: x509.Extensions) -> tuple[str, ...]:
    try:
        usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(_EKU_NAMES.get(oid, oid.dotted_string) for oid in usages)


def _is_ca(extensions: x509.Extensions) -> bool:
    try:
        return bool(extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _policies(extensions: x509.Extensions) -> tuple[str, ...]:
    try:
        policies = extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(policy.policy_identifier.dotted_string for policy in policies)


def key_supported(certificate: x509.Certificate) -> bool:
    """Whether this HISP can use the certificate's public key at all (an SM2 curve, say, it
    cannot: nothing would ever verify under such an anchor)."""
    try:
        certificate.public_key()
    except (UnsupportedAlgorithm, ValueError):
        return False
    return True


def _public_key(certificate: x509.Certificate) -> str:
    if not key_supported(certificate):
        return f"{certificate.public_key_algorithm_oid.dotted_string} (not supported here)"
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.removeprefix("_")


def try_describe_der(der: bytes | None) -> CertificateInfo | None:
    """For stored bytes shown on a page: a row that does not parse shows as unreadable."""
    if not der:
        return None
    try:
        return describe_der(der)
    except NotACertificate:
        return None
