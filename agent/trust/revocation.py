"""Revocation by OCSP (RFC 6960) and CRL (RFC 5280 5, 6.3), over bounded HTTP, with a cache.

``HttpRevocationChecker.status`` answers for one certificate and its issuer:

* NOT_CHECKED when the certificate names no source (no AIA OCSP URL, no CRL distribution point);
* GOOD / REVOKED from the first source that gives a verified, current answer (OCSP first: it is
  small and fresh; then the CRL);
* UNAVAILABLE when sources are named but none answered usably and nothing is cached.

Answers are cached per (issuer key, serial) until the source's nextUpdate (capped), CRLs per URL
the same way, so steady-state mail costs no fetches. An answer without nextUpdate is accepted
only when its thisUpdate is within ``default_ttl``, and is cached for that long. A failure is
remembered briefly (``failure_ttl``) so a dead responder does not add its time-out to every
message.

Scope, stated so nobody assumes more: CRLs must be signed by the certificate's issuer (indirect
CRLs and delta CRLs are not used); only http(s) sources are read (an ldap:// distribution point
counts as named but unreadable).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from agent.trust.algorithms import (
    MISSING_OR_MALFORMED,
    PARSE_ERRORS,
    issued_by,
    verify_signature,
)
from agent.trust.cache import ByteCache, MemoryCache
from agent.trust.fetch import DEFAULT_TIMEOUT, Fetcher, FetchError
from agent.types import RevocationStatus

log = logging.getLogger(__name__)

# A source that could not be fetched or whose bytes do not parse.
_UNREADABLE: tuple[type[Exception], ...] = (FetchError, *PARSE_ERRORS)
# Clock disagreement tolerated between us and a responder or CRL issuer.
_SKEW = timedelta(minutes=5)
# At most this many URLs of each kind are tried per certificate (hostile certificates).
_MAX_SOURCES = 3


class _Unusable(Exception):
    """This source gave no answer we can rely on; the message says why."""


@dataclass(frozen=True)
class _Answer:
    revoked_at: datetime | None
    # The RFC 5280 reason name as the source gave it ("" for none), for ``explain``; the cached
    # form keeps only what ``status`` needs.
    reason: str = ""

    def encode(self) -> bytes:
        return (
            b"good"
            if self.revoked_at is None
            else b"revoked " + self.revoked_at.isoformat().encode()
        )

    @staticmethod
    def decode(data: bytes) -> _Answer | None:
        if data == b"good":
            return _Answer(None)
        if data.startswith(b"revoked "):
            return _Answer(datetime.fromisoformat(data[8:].decode()))
        return None

    def status_at(self, at: datetime) -> RevocationStatus:
        # RFC 5280 6.3: the status at the validation time; a revocation after it does not count.
        if self.revoked_at is not None and self.revoked_at <= at:
            return RevocationStatus.REVOKED
        return RevocationStatus.GOOD


_UNAVAILABLE = b"unavailable"


def _uris(names: list[x509.GeneralName]) -> list[str]:
    return [n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)]


def ocsp_urls(certificate: x509.Certificate) -> list[str]:
    try:
        aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except MISSING_OR_MALFORMED:
        return []
    return _uris(
        [
            d.access_location
            for d in aia.value
            if d.access_method == AuthorityInformationAccessOID.OCSP
        ]
    )


def crl_urls(certificate: x509.Certificate) -> list[str]:
    try:
        cdp = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except MISSING_OR_MALFORMED:
        return []
    urls: list[str] = []
    for point in cdp.value:
        urls.extend(_uris(list(point.full_name or [])))
    return urls


@lru_cache(maxsize=4096)
def _sources(certificate: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(OCSP URLs, CRL URLs), at most ``_MAX_SOURCES`` of each. Certificates compare and hash by
    their DER, so this is read once per certificate rather than once per message."""
    return tuple(ocsp_urls(certificate)[:_MAX_SOURCES]), tuple(crl_urls(certificate)[:_MAX_SOURCES])


@lru_cache(maxsize=4096)
def _status_key(certificate: x509.Certificate, issuer: x509.Certificate) -> str:
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"revocation:{hashlib.sha256(spki).hexdigest()}:{certificate.serial_number:x}"


@dataclass(frozen=True)
class RevocationReport:
    """What the sources said about one certificate, for an operator rather than a message:
    ``source`` is "OCSP" or "CRL" and ``url`` the one that answered (empty when none did),
    ``reason`` the RFC 5280 reason name ("" when the source gave none), ``problems`` why each
    source tried before (or instead of) it gave no usable answer."""

    status: RevocationStatus
    source: str = ""
    url: str = ""
    reason: str = ""
    revoked_at: datetime | None = None
    problems: tuple[str, ...] = ()


class HttpRevocationChecker:
    """The default ``RevocationChecker``: OCSP from AIA, then CRL from the distribution point."""

    def __init__(
        self,
        *,
        cache: ByteCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_crl_bytes: int = 16 << 20,
        allow_private_networks: bool = False,
        default_ttl: float = 3600.0,
        max_ttl: float = 86400.0,
        failure_ttl: float = 30.0,
        budget: float = 2 * DEFAULT_TIMEOUT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._cache: ByteCache = cache if cache is not None else MemoryCache()
        self._crl_fetcher = Fetcher(
            timeout=timeout, max_bytes=max_crl_bytes, allow_private_networks=allow_private_networks
        )
        self._ocsp_fetcher = Fetcher(
            timeout=timeout, max_bytes=64 << 10, allow_private_networks=allow_private_networks
        )
        self._default_ttl = default_ttl
        self._max_ttl = max_ttl
        self._failure_ttl = failure_ttl
        # Wall time for all sources of one certificate: several dead URLs must not add up to
        # minutes per message (each fetch alone is bounded by ``timeout``).
        self._budget = budget
        self._clock = clock

    def status(
        self, certificate: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> RevocationStatus:
        ocsp_sources, crl_sources = _sources(certificate)
        if not ocsp_sources and not crl_sources:
            return RevocationStatus.NOT_CHECKED
        key = _status_key(certificate, issuer)
        cached = self._cache.get(key)
        if cached == _UNAVAILABLE:
            return RevocationStatus.UNAVAILABLE
        if cached is not None and (answer := _Answer.decode(cached)) is not None:
            return answer.status_at(at)
        return self._ask(certificate, issuer, at).status

    def explain(
        self, certificate: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> RevocationReport:
        """Ask the sources now (never a remembered status; a CRL still current may come from
        the cache) and say which one answered, with the reason and date of a revocation, or
        why none did. For operators checking a certificate, not for each message."""
        ocsp_sources, crl_sources = _sources(certificate)
        if not ocsp_sources and not crl_sources:
            return RevocationReport(RevocationStatus.NOT_CHECKED)
        return self._ask(certificate, issuer, at)

    def _ask(
        self, certificate: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> RevocationReport:
        ocsp_sources, crl_sources = _sources(certificate)
        attempts: list[tuple[str, str, Callable[[str], tuple[_Answer, datetime | None]]]] = [
            *(("OCSP", url, lambda u: self._ocsp(u, certificate, issuer)) for url in ocsp_sources),
            *(("CRL", url, lambda u: self._crl(u, certificate, issuer)) for url in crl_sources),
        ]
        key = _status_key(certificate, issuer)
        problems: list[str] = []
        started = time.monotonic()
        for kind, url, attempt in attempts:
            if time.monotonic() - started > self._budget:
                log.info("revocation sources out of time budget")
                problems.append("out of time for the remaining sources")
                break
            try:
                answer, next_update = attempt(url)
            except _Unusable as exc:
                log.info("revocation source unusable: %r (%s)", url, exc)
                problems.append(f"{kind} {url}: {exc}")
                continue
            except PARSE_ERRORS as exc:
                # A CRL entry or responder certificate that does not parse: not an answer.
                log.info("revocation source malformed: %r (%s)", url, type(exc).__name__)
                problems.append(f"{kind} {url}: malformed ({type(exc).__name__})")
                continue
            self._cache.set(key, answer.encode(), self._ttl(next_update))
            status = answer.status_at(at)
            revoked = status is RevocationStatus.REVOKED
            return RevocationReport(
                status, source=kind, url=url,
                reason=answer.reason if revoked else "",
                revoked_at=answer.revoked_at if revoked else None,
                problems=tuple(problems),
            )
        self._cache.set(key, _UNAVAILABLE, self._failure_ttl)
        return RevocationReport(RevocationStatus.UNAVAILABLE, problems=tuple(problems))

    def _ttl(self, next_update: datetime | None) -> float:
        if next_update is None:
            return self._default_ttl
        return min(self._max_ttl, (next_update - self._clock()).total_seconds())

    def _until(self, this_update: datetime, next_update: datetime | None) -> datetime:
        """Until when an answer counts: its nextUpdate, or without one default_ttl after its
        thisUpdate (as _check_times accepts it), never default_ttl from whenever it was read."""
        return next_update or this_update + timedelta(seconds=self._default_ttl)

    def _check_times(self, this_update: datetime, next_update: datetime | None) -> None:
        now = self._clock()
        if this_update > now + _SKEW:
            raise _Unusable("issued in the future")
        if next_update is not None and next_update < now - _SKEW:
            raise _Unusable("stale (nextUpdate has passed)")
        if next_update is None and this_update < now - timedelta(seconds=self._default_ttl):
            # RFC 6960 4.2.2.1 / RFC 5280 5.1.2.5: without nextUpdate only a recent thisUpdate
            # shows the answer is current. Otherwise a "good" captured before the revocation
            # could be replayed (OCSP travels over plain HTTP) for ever.
            raise _Unusable("stale (no nextUpdate and thisUpdate is too old)")

    # -- OCSP (RFC 6960) -------------------------------------------------------------------

    def _ocsp(
        self, url: str, certificate: x509.Certificate, issuer: x509.Certificate
    ) -> tuple[_Answer, datetime | None]:
        # CertID with SHA-1 is what every responder understands (RFC 5019 2.1.1); it names the
        # certificate, it is not a signature.
        certid_hash = hashes.SHA1()  # noqa: S303
        builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, certid_hash)
        request = builder.build()
        try:
            data = self._ocsp_fetcher.post(
                url, request.public_bytes(serialization.Encoding.DER), "application/ocsp-request"
            )
            response = ocsp.load_der_ocsp_response(data)
        except _UNREADABLE as exc:
            raise _Unusable(f"OCSP: {exc}")
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise _Unusable(f"OCSP response status {response.response_status.name}")
        self._verify_ocsp_signature(response, issuer, request)
        for single in response.responses:
            ours = (
                ocsp.OCSPRequestBuilder()
                .add_certificate(certificate, issuer, single.hash_algorithm)
                .build()
            )
            if (
                single.serial_number == certificate.serial_number
                and single.issuer_key_hash == ours.issuer_key_hash
                and single.issuer_name_hash == ours.issuer_name_hash
            ):
                self._check_times(single.this_update_utc, single.next_update_utc)
                until = self._until(single.this_update_utc, single.next_update_utc)
                if single.certificate_status is ocsp.OCSPCertStatus.GOOD:
                    return _Answer(None), until
                if single.certificate_status is ocsp.OCSPCertStatus.REVOKED:
                    revoked_at = single.revocation_time_utc
                    assert revoked_at is not None  # set whenever the status is REVOKED
                    flag = single.revocation_reason
                    return _Answer(revoked_at, flag.name if flag is not None else ""), until
                raise _Unusable("OCSP status unknown")
        raise _Unusable("OCSP response does not cover the certificate")

    def _verify_ocsp_signature(
        self, response: ocsp.OCSPResponse, issuer: x509.Certificate, request: ocsp.OCSPRequest
    ) -> None:
        """RFC 6960 4.2.2.2: signed by the issuer itself, or by a responder certificate the
        issuer issued directly that carries id-kp-OCSPSigning."""
        try:
            digest = response.signature_hash_algorithm
        except UnsupportedAlgorithm:
            raise _Unusable("OCSP response signed with an unsupported algorithm")
        if isinstance(digest, hashes.MD5):
            raise _Unusable("OCSP response signed with MD5")
        signer: x509.Certificate | None = None
        if self._is_responder(response, issuer, request.issuer_key_hash):
            signer = issuer
        else:
            for candidate in response.certificates:
                if self._is_responder(
                    response, candidate, _sha1_key_hash(candidate)
                ) and self._delegated_ok(candidate, issuer):
                    signer = candidate
                    break
        if signer is None:
            raise _Unusable("OCSP response not signed by the issuer or an authorised responder")
        if not verify_signature(
            signer.public_key(),
            signature=response.signature,
            data=response.tbs_response_bytes,
            digest=digest,
        ):
            raise _Unusable("OCSP response signature does not verify")

    @staticmethod
    def _is_responder(
        response: ocsp.OCSPResponse, certificate: x509.Certificate, key_hash: bytes
    ) -> bool:
        if response.responder_key_hash is not None:
            return response.responder_key_hash == key_hash
        return response.responder_name == certificate.subject

    def _delegated_ok(self, responder: x509.Certificate, issuer: x509.Certificate) -> bool:
        if not issued_by(responder, issuer):
            return False
        now = self._clock()
        if not responder.not_valid_before_utc <= now <= responder.not_valid_after_utc:
            return False
        try:
            eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except MISSING_OR_MALFORMED:
            return False
        return ExtendedKeyUsageOID.OCSP_SIGNING in eku

    # -- CRL (RFC 5280 5 and 6.3) --------------------------------------------------------

    def _crl(
        self, url: str, certificate: x509.Certificate, issuer: x509.Certificate
    ) -> tuple[_Answer, datetime | None]:
        cache_key = f"crl:{url}"
        data = self._cache.get(cache_key)
        fetched = data is None
        if data is None:
            try:
                data = self._crl_fetcher.get(url)
            except FetchError as exc:
                raise _Unusable(f"CRL: {exc}")
        try:
            crl = (
                x509.load_pem_x509_crl(data)
                if data.lstrip().startswith(b"-----")
                else x509.load_der_x509_crl(data)
            )
        except PARSE_ERRORS as exc:
            raise _Unusable(f"CRL does not parse ({exc})")
        self._verify_crl(crl, certificate, issuer)
        until = self._until(crl.last_update_utc, crl.next_update_utc)
        if fetched:
            self._cache.set(cache_key, data, self._ttl(until))
        entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
        if entry is None:
            return _Answer(None), until
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except MISSING_OR_MALFORMED:
            reason = None
        if reason is x509.ReasonFlags.remove_from_crl:
            return _Answer(None), until
        return _Answer(entry.revocation_date_utc, reason.name if reason is not None else ""), until

    def _verify_crl(
        self,
        crl: x509.CertificateRevocationList,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
    ) -> None:
        if crl.issuer != issuer.subject:
            raise _Unusable("CRL issued by someone else (indirect CRLs are not used)")
        try:
            usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
            if not usage.crl_sign:
                raise _Unusable("issuer keyUsage lacks cRLSign (RFC 5280 6.3.3(f))")
        except x509.ExtensionNotFound:
            pass
        try:
            digest = crl.signature_hash_algorithm
        except UnsupportedAlgorithm:
            raise _Unusable("CRL signed with an unsupported algorithm")
        if isinstance(digest, hashes.MD5):
            raise _Unusable("CRL signed with MD5")
        if not verify_signature(
            issuer.public_key(),
            signature=crl.signature,
            data=crl.tbs_certlist_bytes,
            digest=digest,
            parameters=crl.signature_algorithm_parameters,
        ):
            raise _Unusable("CRL signature does not verify with the issuer key")
        self._check_times(crl.last_update_utc, crl.next_update_utc)
        for extension in crl.extensions:
            if isinstance(extension.value, x509.DeltaCRLIndicator):
                raise _Unusable("delta CRLs are not used")
            if isinstance(extension.value, x509.IssuingDistributionPoint):
                if not _idp_covers(extension.value, certificate):
                    raise _Unusable("CRL scope does not cover the certificate")
            elif extension.critical and isinstance(extension.value, x509.UnrecognizedExtension):
                raise _Unusable("CRL has an unrecognised critical extension")


def _idp_covers(idp: x509.IssuingDistributionPoint, certificate: x509.Certificate) -> bool:
    """RFC 5280 6.3.3(b): a scoped CRL must cover the certificate; partial scopes are not used."""
    if idp.indirect_crl or idp.only_some_reasons or idp.only_contains_attribute_certs:
        return False
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if idp.only_contains_ca_certs and not is_ca:
        return False
    return not (idp.only_contains_user_certs and is_ca)


def _sha1_key_hash(certificate: x509.Certificate) -> bytes:
    """SHA-1 of the subjectPublicKey BIT STRING (RFC 6960 4.2.1 ResponderID byKey)."""
    return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest
