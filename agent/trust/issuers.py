"""AIA caIssuers fetching (RFC 5280 4.2.2.1): intermediates a message did not carry."""

from __future__ import annotations

import logging

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID

from agent.trust.algorithms import MISSING_OR_MALFORMED, PARSE_ERRORS
from agent.trust.cache import ByteCache, MemoryCache
from agent.trust.fetch import DEFAULT_TIMEOUT, Fetcher, FetchError

log = logging.getLogger(__name__)

# A source that could not be fetched or whose bytes do not parse.
_UNREADABLE: tuple[type[Exception], ...] = (FetchError, *PARSE_ERRORS)
_MAX_URLS = 3
_MAX_CERTIFICATES = 16
_FAILED = b""


def ca_issuer_urls(certificate: x509.Certificate) -> list[str]:
    try:
        aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except MISSING_OR_MALFORMED:
        return []
    return [
        d.access_location.value
        for d in aia.value
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


def parse_issuers(data: bytes) -> list[x509.Certificate]:
    """A DER certificate (RFC 5280 4.2.2.1 "application/pkix-cert") or a certs-only CMS
    ("application/pkcs7-mime"); PEM forms of either are accepted too. Raises one of
    ``PARSE_ERRORS`` for anything else."""
    if data.lstrip().startswith(b"-----BEGIN PKCS7"):
        return pkcs7.load_pem_pkcs7_certificates(data)
    if data.lstrip().startswith(b"-----"):
        return x509.load_pem_x509_certificates(data)
    try:
        return [x509.load_der_x509_certificate(data)]
    except PARSE_ERRORS:
        return pkcs7.load_der_pkcs7_certificates(data)


class HttpIssuerFetcher:
    """The default ``IssuerFetcher``: reads the caIssuers URLs, caches what they return."""

    def __init__(
        self,
        *,
        cache: ByteCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = 256 << 10,
        allow_private_networks: bool = False,
        ttl: float = 86400.0,
        failure_ttl: float = 60.0,
    ) -> None:
        self._cache: ByteCache = cache if cache is not None else MemoryCache()
        self._fetcher = Fetcher(
            timeout=timeout, max_bytes=max_bytes, allow_private_networks=allow_private_networks
        )
        self._ttl = ttl
        self._failure_ttl = failure_ttl

    def issuers(self, certificate: x509.Certificate) -> list[x509.Certificate]:
        found: list[x509.Certificate] = []
        for url in ca_issuer_urls(certificate)[:_MAX_URLS]:
            found.extend(self._read(url))
        return list(dict.fromkeys(found))[:_MAX_CERTIFICATES]

    def _read(self, url: str) -> list[x509.Certificate]:
        key = f"ca-issuers:{url}"
        data = self._cache.get(key)
        if data == _FAILED:
            return []
        if data is None:
            try:
                data = self._fetcher.get(url)
                certificates = parse_issuers(data)
            except _UNREADABLE as exc:
                log.info("caIssuers unusable: %r (%s)", url, exc)
                self._cache.set(key, _FAILED, self._failure_ttl)
                return []
            self._cache.set(key, data, self._ttl)
            return certificates
        try:
            return parse_issuers(data)
        except PARSE_ERRORS:
            return []
