"""OCSP responder for the certificates our CAs issue (RFC 6960).

Each response is signed by the CA that issued the certificate in question (RFC 6960 section
4.2.2.2, no delegated responder) and states what the database shows at that moment: a revocation
shows in the very next response.

The endpoint is open to anyone, and a signature (with the unwrapping of the CA key before it) costs
far more than a request, so signatures are not made per request. As the lightweight profile for
high volume responders does (RFC 5019, now RFC 9919), an answer without a nonce is produced once
per issuing CA, serial, CertID hash algorithm and status, kept in Django's cache (Redis in
production: one signature for every web process and host) and handed out until it is older than
``FRESH_FOR``, half of its validity: a relying party always gets at least half an hour before its
nextUpdate. The status is part of the key, read from the database on every request, so a
revocation (or any change of date or reason) needs no invalidation: the next request finds no
answer for the new status and signs one.

What cannot come from the cache is counted per client (``_bucket``): a nonce echoed (RFC 9654; the
answer is bound to one request, so it is signed for it) and the first answer for a serial we never
issued (anyone can invent serials without end). Within ``CLIENT_BUDGET`` per ``CLIENT_WINDOW`` they
are signed; beyond it a request with a nonce gets the cached answer without the nonce (the
profile's pre-produced answers carry none and are judged fresh by thisUpdate and nextUpdate, RFC
5019 section 4; the nonce is optional for a responder, RFC 9654), and one for a serial we never
issued gets tryLater (RFC 6960 section 2.3), unsigned.

Every request the responder cannot answer gets malformedRequest, never a 500: a CertID hashed with
an algorithm we do not know (MD5, SHA-3), a negative serial (RFC 5280 4.1.2.2: never one of ours,
and not encodable in the answer), a repeated extension, and an empty or over-long nonce, which
RFC 9654 section 2.1 says to refuse rather than echo.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.core.cache import cache
from django.utils import timezone

from hisp.ca.crl import REASON_FLAGS
from hisp.certificates import load
from hisp.keystore import unwrap_private_key
from hisp.models import Certificate, PrivateKey

VALIDITY = timedelta(hours=1)
# A cached answer is signed again once it is older than this: relying parties cache it until
# nextUpdate, so what they get is always good for at least VALIDITY - FRESH_FOR.
FRESH_FOR = VALIDITY / 2
# Signatures a client may ask for beyond the cached answers (nonces echoed, serials we never
# issued), per window. A validator that sends a nonce with every check gets one echoed every 3
# seconds on average; one client cannot make the responder sign more often than that.
CLIENT_BUDGET = 20
CLIENT_WINDOW = timedelta(minutes=1)
_MAX_NONCE = 128  # octets (RFC 9654 section 2.1)
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class Answer:
    """A DER OCSPResponse and whether an HTTP cache may keep it (RFC 5019 section 6): a
    successful answer without a nonce, the same for every client until it is signed again."""

    der: bytes
    shared: bool = False

    def period(self) -> tuple[datetime, datetime]:
        """thisUpdate and nextUpdate of a successful answer."""
        response = ocsp.load_der_ocsp_response(self.der)
        assert response.next_update_utc is not None  # we always set it
        return response.this_update_utc, response.next_update_utc


@dataclass(frozen=True)
class _Status:
    cert_status: ocsp.OCSPCertStatus
    revoked_at: datetime | None = None
    reason: x509.ReasonFlags | None = None

    @property
    def key(self) -> str:
        when = self.revoked_at.isoformat() if self.revoked_at is not None else ""
        reason = self.reason.value if self.reason is not None else ""
        return f"{self.cert_status.name}:{when}:{reason}"


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> Answer:
    return Answer(
        ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)
    )


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    hasher = hashes.Hash(algorithm)
    hasher.update(data)
    return hasher.finalize()


def _find_issuer(request: ocsp.OCSPRequest) -> tuple[Certificate, x509.Certificate] | None:
    """Our CA whose name and key hashes match the request's CertID (RFC 6960 section 4.1.1).

    Every request names an issuer, ours or made up, so the CAs' hashes are worked out once per
    CA certificate and hash algorithm (``_issuer_hashes``), not per request: with a CA per
    domain, parsing and hashing each on every request made a made-up issuer cost as many
    certificate parses as we have domains."""
    algorithm = type(request.hash_algorithm).__name__.lower()
    wanted = (request.issuer_name_hash, request.issuer_key_hash)
    ours = Certificate.objects.filter(
        binding=Certificate.Binding.CA, source=Certificate.Source.HOSTED,
        private_key__isnull=False,
    ).values_list("pk", "fingerprint_sha256")
    for pk, fingerprint in ours:
        if _issuer_hashes(fingerprint, algorithm) == wanted:
            row = Certificate.objects.get(pk=pk)
            return row, load(row)
    return None


@functools.lru_cache(maxsize=8192)
def _issuer_hashes(fingerprint: str, algorithm: str) -> tuple[bytes, bytes]:
    """(name hash, key hash) of the CA certificate with ``fingerprint`` under ``algorithm``. A
    fingerprint names one certificate's bytes for ever, so the answer never goes stale."""
    cert = load(Certificate.objects.only("der").get(fingerprint_sha256=fingerprint))
    key_bits = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    digest = _HASHES[algorithm]()
    return _digest(digest, cert.subject.public_bytes()), _digest(digest, key_bits)


def _status_row(ca_row: Certificate, serial_number: int) -> Certificate | None:
    """The row that decides the answer for a serial of ``ca_row``. Should several rows hold the
    serial (nothing we write makes two, but the database does not forbid it), any of them
    revoked makes it revoked, as the CRL lists it (hisp.ca.crl.revoked_entries), the earliest
    revocation first."""
    rows = Certificate.objects.filter(issued_by=ca_row, serial=format(serial_number, "x"))
    return (rows.filter(revoked_at__isnull=False).order_by("revoked_at", "pk").first()
            or rows.order_by("pk").first())


def _status(ca_row: Certificate, serial_number: int) -> _Status:
    leaf = _status_row(ca_row, serial_number)
    if leaf is None:
        return _Status(ocsp.OCSPCertStatus.UNKNOWN)
    if leaf.revoked_at is None:
        return _Status(ocsp.OCSPCertStatus.GOOD)
    flag = REASON_FLAGS.get(leaf.revocation_reason)
    # RFC 5280 5.3.1, as in the CRL: reason "unspecified" is left out rather than stated.
    reason = flag if flag != x509.ReasonFlags.unspecified else None
    return _Status(ocsp.OCSPCertStatus.REVOKED, leaf.revoked_at, reason)


def _nonce(request: ocsp.OCSPRequest) -> x509.OCSPNonce | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value
    except x509.ExtensionNotFound:
        return None


def _sign(request: ocsp.OCSPRequest, ca_row: Certificate, ca_cert: x509.Certificate,
          status: _Status, now: datetime, nonce: x509.OCSPNonce | None) -> bytes:
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=request.issuer_name_hash,
        issuer_key_hash=request.issuer_key_hash,
        serial_number=request.serial_number,
        algorithm=request.hash_algorithm,
        cert_status=status.cert_status,
        this_update=now,
        # Relying parties cache an answer until nextUpdate (RFC 6960 4.2.2.1): keep it short so a
        # revocation reaches them within the hour, not at the next CRL.
        next_update=now + VALIDITY,
        revocation_time=status.revoked_at,
        revocation_reason=status.reason,
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, ca_cert)
    if nonce is not None:
        builder = builder.add_extension(nonce, critical=False)
    key = unwrap_private_key(PrivateKey.objects.get(pk=ca_row.private_key_id))
    response = builder.sign(key, hashes.SHA256())
    del key
    return response.public_bytes(serialization.Encoding.DER)


def _cache_key(ca_row: Certificate, request: ocsp.OCSPRequest, status: _Status) -> str:
    # The CA by fingerprint (the key that signed the answer), and the status as the database
    # shows it now: a changed status is a different key, so nothing ever has to be invalidated.
    parts = (ca_row.fingerprint_sha256, request.hash_algorithm.name,
             format(request.serial_number, "x"), status.key)
    return "hisp:ocsp:" + hashlib.sha256("|".join(parts).encode()).hexdigest()


def _cached(key: str, now: datetime) -> bytes | None:
    try:
        der = cache.get(key)
    except Exception:  # noqa: BLE001 (an unreachable cache: the answer is signed instead)
        return None
    if not isinstance(der, bytes):
        return None
    age = now - ocsp.load_der_ocsp_response(der).this_update_utc
    # Also refused when produced "after" now: an answer asked for an earlier moment (at=).
    return der if timedelta(0) <= age < FRESH_FOR else None


def _keep(key: str, der: bytes) -> None:
    try:
        cache.set(key, der, timeout=int(FRESH_FOR.total_seconds()))
    except Exception:  # noqa: BLE001, S110 (unreachable: the next request signs again)
        pass


def _bucket(client: str | None) -> str:
    """Whom a budget is counted for: the address, or for IPv6 its /64, which one subscriber
    usually holds whole (counting single addresses would give them 2^64 budgets)."""
    try:
        address = ipaddress.ip_address(client or "")
    except ValueError:
        return "hisp:ocsp-budget:unknown"
    if address.version == 6:
        return f"hisp:ocsp-budget:{ipaddress.ip_network(f'{address}/64', strict=False)}"
    return f"hisp:ocsp-budget:{address}"


def _spend(client: str | None) -> bool:
    """Take one signature from ``client``'s budget; False when it is used up (or the shared
    cache cannot count it: then only cached and known-serial answers are given)."""
    key = _bucket(client)
    window = int(CLIENT_WINDOW.total_seconds())
    try:
        cache.add(key, 0, timeout=window)
        try:
            used = int(cache.incr(key))
        except ValueError:  # the window ended between add and incr
            cache.set(key, 1, timeout=window)
            used = 1
    except Exception:  # noqa: BLE001
        return False
    return used <= CLIENT_BUDGET


def _parse(request_der: bytes) -> tuple[ocsp.OCSPRequest, x509.OCSPNonce | None] | None:
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        algorithm = request.hash_algorithm
        nonce = _nonce(request)
    except (ValueError, TypeError, NotImplementedError, UnsupportedAlgorithm,
            x509.DuplicateExtension):
        # Also raised for requests with more than one CertID, which we do not answer.
        return None
    if (type(algorithm).__name__.lower() not in _HASHES or request.serial_number < 0
            or (nonce is not None and not 1 <= len(nonce.nonce) <= _MAX_NONCE)):
        return None
    return request, nonce


def answer(request_der: bytes, *, at: datetime | None = None,
           client: str | None = None) -> Answer:
    """The answer to one DER OCSPRequest from ``client`` (its IP address, for the budget).
    Malformed input gets malformedRequest and a certificate of someone else's CA gets
    unauthorized (RFC 6960 section 2.3)."""
    parsed = _parse(request_der)
    if parsed is None:
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    request, nonce = parsed
    found = _find_issuer(request)
    if found is None:
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    ca_row, ca_cert = found
    now = at or timezone.now()
    status = _status(ca_row, request.serial_number)
    if nonce is not None and _spend(client):
        return Answer(_sign(request, ca_row, ca_cert, status, now, nonce))
    key = _cache_key(ca_row, request, status)
    der = _cached(key, now)
    if der is None:
        # An answer for a serial we hold is made once per FRESH_FOR whoever asks; one for a serial
        # we never issued is charged to the client; with a nonce we are here because the
        # client's budget is already spent.
        if status.cert_status == ocsp.OCSPCertStatus.UNKNOWN and (
                nonce is not None or not _spend(client)):
            return _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
        der = _sign(request, ca_row, ca_cert, status, now, None)
        _keep(key, der)
    return Answer(der, shared=True)


def respond(request_der: bytes, *, at: datetime | None = None,
            client: str | None = None) -> bytes:
    """The DER OCSPResponse for one DER OCSPRequest (see ``answer``)."""
    return answer(request_der, at=at, client=client).der
