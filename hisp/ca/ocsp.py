"""OCSP responder for the certificates our CAs issue (RFC 6960).

Each response is signed by the CA that issued the certificate in question (RFC 6960 section
4.2.2.2, no delegated responder), answers from the database as it is at that moment (a revocation
shows in the very next response), and echoes the request's nonce (RFC 9654, which replaced RFC
8954).

The endpoint is open to anyone, so every request it cannot answer gets malformedRequest, never a
500: a CertID hashed with an algorithm we do not know (MD5, SHA-3), a negative serial (RFC 5280
4.1.2.2: never one of ours, and not encodable in the answer), a repeated extension, and an empty
or over-long nonce, which RFC 9654 section 2.1 says to refuse rather than echo.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.utils import timezone

from hisp.ca.crl import REASON_FLAGS, our_cas
from hisp.certificates import load
from hisp.keystore import unwrap_private_key
from hisp.models import Certificate, PrivateKey

_VALIDITY = timedelta(hours=1)
_MAX_NONCE = 128  # octets (RFC 9654 section 2.1)
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    hasher = hashes.Hash(algorithm)
    hasher.update(data)
    return hasher.finalize()


def _find_issuer(request: ocsp.OCSPRequest) -> tuple[Certificate, x509.Certificate] | None:
    """Our CA whose name and key hashes match the request's CertID (RFC 6960 section 4.1.1)."""
    algorithm = request.hash_algorithm
    for row in our_cas():
        cert = load(row)
        key_bits = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1
        )
        if _digest(algorithm, key_bits) != request.issuer_key_hash:
            continue
        if _digest(algorithm, cert.subject.public_bytes()) != request.issuer_name_hash:
            continue
        return row, cert
    return None


def _status_row(ca_row: Certificate, serial_number: int) -> Certificate | None:
    """The row that decides the answer for a serial of ``ca_row``. Should several rows hold the
    serial (nothing we write makes two, but the database does not forbid it), any of them
    revoked makes it revoked, as the CRL lists it (hisp.ca.crl.revoked_entries), the earliest
    revocation first."""
    rows = Certificate.objects.filter(issued_by=ca_row, serial=format(serial_number, "x"))
    return (rows.filter(revoked_at__isnull=False).order_by("revoked_at", "pk").first()
            or rows.order_by("pk").first())


def _nonce(request: ocsp.OCSPRequest) -> x509.OCSPNonce | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value
    except x509.ExtensionNotFound:
        return None


def respond(request_der: bytes, *, at: datetime | None = None) -> bytes:
    """A DER OCSPResponse for one DER OCSPRequest; malformed input gets malformedRequest and a
    certificate of someone else's CA gets unauthorized (RFC 6960 section 2.3)."""
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        algorithm = request.hash_algorithm
        nonce = _nonce(request)
    except (ValueError, TypeError, NotImplementedError, UnsupportedAlgorithm,
            x509.DuplicateExtension):
        # Also raised for requests with more than one CertID, which we do not answer.
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    if (type(algorithm).__name__.lower() not in _HASHES or request.serial_number < 0
            or (nonce is not None and not 1 <= len(nonce.nonce) <= _MAX_NONCE)):
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    found = _find_issuer(request)
    if found is None:
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    ca_row, ca_cert = found
    now = at or timezone.now()
    leaf = _status_row(ca_row, request.serial_number)
    revocation_time = None
    revocation_reason = None
    if leaf is None:
        status = ocsp.OCSPCertStatus.UNKNOWN
    elif leaf.revoked_at is not None:
        status = ocsp.OCSPCertStatus.REVOKED
        revocation_time = leaf.revoked_at
        flag = REASON_FLAGS.get(leaf.revocation_reason)
        revocation_reason = flag if flag != x509.ReasonFlags.unspecified else None
    else:
        status = ocsp.OCSPCertStatus.GOOD
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=request.issuer_name_hash,
        issuer_key_hash=request.issuer_key_hash,
        serial_number=request.serial_number,
        algorithm=algorithm,
        cert_status=status,
        this_update=now,
        # Relying parties cache an answer until nextUpdate (RFC 6960 4.2.2.1): keep it short so a
        # revocation reaches them within the hour, not at the next CRL.
        next_update=now + _VALIDITY,
        revocation_time=revocation_time,
        revocation_reason=revocation_reason,
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, ca_cert)
    if nonce is not None:
        builder = builder.add_extension(nonce, critical=False)
    key = unwrap_private_key(PrivateKey.objects.get(pk=ca_row.private_key_id))
    response = builder.sign(key, hashes.SHA256())
    del key
    return response.public_bytes(serialization.Encoding.DER)
