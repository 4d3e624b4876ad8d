"""Adapters that give the agent (a pure library) what it needs from the database.

- ``DatabaseKeyStore``: hosted signing and decryption identities. Private keys are unwrapped only
  when the agent calls ``Identity.private_key()`` (i.e. when it actually signs or decrypts) and
  are not cached: unwrapping is one AES key unwrap, one AES-GCM decryption and one DER parse
  (about a millisecond for RSA-2048), cheap next to the RSA operation itself, so keeping clear
  keys in memory would buy nothing.
- ``DatabaseTrustStore``: anchors per hosted domain and direction.
- ``DatabaseCertificateResolver``: recipient certificates. Hosted addresses come from our own
  rows (address-bound level, then domain-bound); other addresses from certificates imported out of
  band, then from discovery (DNS CERT / LDAP), plugged in by ``discovery_resolver()``.
- ``HostedFirstRevocationChecker``: our own certificates are checked against the database
  directly; everyone else's through the agent's HTTP checker (OCSP, then CRL).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from django.conf import settings
from django.core.cache import cache as django_cache
from django.db.models import Q, QuerySet
from django.utils import timezone

from agent.trust import HttpIssuerFetcher, HttpRevocationChecker
from agent.types import (
    Binding,
    Candidates,
    CertificateResolver,
    Direction,
    Environment,
    Identity,
    RevocationChecker,
    RevocationStatus,
)
from hisp.certificates import fingerprint, load
from hisp.keystore import unwrap_private_key
from hisp.models import Address, Certificate, Domain, PrivateKey
from hisp.services.trust import anchors_for

_SIGNING = (Certificate.Usage.DUAL, Certificate.Usage.SIGNING)
_ENCRYPTION = (Certificate.Usage.DUAL, Certificate.Usage.ENCRYPTION)
_WITH_KEY = (Certificate.Source.HOSTED, Certificate.Source.IMPORTED)


def _split(address: str) -> tuple[str, str]:
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}", domain.lower()


def _key_loader(private_key_id: int) -> Callable[[], RSAPrivateKey]:
    def unwrap() -> RSAPrivateKey:
        return unwrap_private_key(PrivateKey.objects.get(pk=private_key_id))

    return unwrap


def _chain(row: Certificate) -> tuple[x509.Certificate, ...]:
    """Intermediates to embed: the issuer unless it is a self-signed root (anchors are never
    sent, RFC 8551 2.5.2 leaves it to the receiver's anchors)."""
    issuer = row.issued_by
    if issuer is None or issuer.subject == issuer.issuer:
        return ()
    return (load(issuer),)


def _identity(row: Certificate) -> Identity:
    assert row.private_key_id is not None
    binding = Binding.ADDRESS if row.binding == Certificate.Binding.ADDRESS else Binding.DOMAIN
    return Identity(
        certificate=load(row),
        private_key=_key_loader(row.private_key_id),
        chain=_chain(row),
        binding=binding,
    )


def _current(rows: QuerySet[Certificate], now: datetime) -> QuerySet[Certificate]:
    return rows.filter(
        revoked_at__isnull=True,
        superseded_by__isnull=True,
        not_before__lte=now,
        not_after__gt=now,
    ).order_by("-not_before", "-pk")


class DatabaseKeyStore:
    """The agent's ``PrivateKeyStore`` over hosted certificates and wrapped keys."""

    def __init__(self, *, clock: Callable[[], datetime] = timezone.now) -> None:
        self._clock = clock

    def _hosted(self) -> QuerySet[Certificate]:
        return Certificate.objects.filter(source__in=_WITH_KEY, private_key__isnull=False).select_related(
            "issued_by"
        )

    def signing_identities(self, address: str) -> Sequence[Identity]:
        value, domain = _split(address)
        if not Address.objects.filter(address=value).exists():
            return []
        now = self._clock()
        rows = self._hosted().filter(usage__in=_SIGNING)
        by_address = _current(rows.filter(binding=Certificate.Binding.ADDRESS, bound_name=value), now)
        by_domain = _current(rows.filter(binding=Certificate.Binding.DOMAIN, bound_name=domain), now)
        return [_identity(row) for row in [*by_address, *by_domain]]

    def decryption_identities(self, addresses: Sequence[str]) -> Sequence[Identity]:
        """Every key that may open mail to these addresses, superseded and expired ones
        included: mail encrypted to a certificate just before its renewal is still in flight."""
        names = [_split(a) for a in addresses]
        values = [value for value, _ in names]
        hosted = set(Address.objects.filter(address__in=values).values_list("address", flat=True))
        domains = {domain for value, domain in names if value in hosted}
        if not hosted:
            return []
        rows = self._hosted().filter(usage__in=_ENCRYPTION).filter(
            Q(binding=Certificate.Binding.ADDRESS, bound_name__in=hosted)
            | Q(binding=Certificate.Binding.DOMAIN, bound_name__in=domains)
        )
        # Current certificates first, so the usual case needs one try.
        ordered = sorted(
            rows,
            key=lambda r: (r.superseded_by_id is not None, r.revoked_at is not None, -r.not_before.timestamp()),
        )
        return [_identity(row) for row in ordered]


class DatabaseTrustStore:
    """The agent's ``TrustStore``: the anchors each hosted domain trusts, per direction."""

    def anchors(self, domain: str, direction: Direction) -> Sequence[x509.Certificate]:
        return anchors_for(domain, direction)


class DatabaseCertificateResolver:
    """The agent's ``CertificateResolver``.

    Hosted recipient: our own certificates (address-bound level, then domain-bound). Anyone else:
    certificates imported out of band (same two levels), then discovery.
    """

    def __init__(
        self,
        *,
        discovery: CertificateResolver | None = None,
        clock: Callable[[], datetime] = timezone.now,
    ) -> None:
        self._discovery = discovery
        self._clock = clock

    def _level(self, source: str, binding: Binding, rows: QuerySet[Certificate]) -> Candidates:
        certificates = tuple(load(row) for row in _current(rows, self._clock()))
        return Candidates(source=source, binding=binding, certificates=certificates)

    def candidates(self, address: str) -> Iterator[Candidates]:
        value, domain = _split(address)
        encryption = Certificate.objects.filter(usage__in=_ENCRYPTION)
        if Domain.objects.filter(name=domain).exists():
            hosted = encryption.filter(source__in=_WITH_KEY, private_key__isnull=False)
            yield self._level(
                "hosted",
                Binding.ADDRESS,
                hosted.filter(binding=Certificate.Binding.ADDRESS, bound_name=value),
            )
            yield self._level(
                "hosted",
                Binding.DOMAIN,
                hosted.filter(binding=Certificate.Binding.DOMAIN, bound_name=domain),
            )
            return
        imported = encryption.filter(source=Certificate.Source.IMPORTED, private_key__isnull=True)
        by_address = imported.filter(binding=Certificate.Binding.ADDRESS, bound_name=value)
        if by_address.exists():
            yield self._level("imported", Binding.ADDRESS, by_address)
        by_domain = imported.filter(binding=Certificate.Binding.DOMAIN, bound_name=domain)
        if by_domain.exists():
            yield self._level("imported", Binding.DOMAIN, by_domain)
        if self._discovery is not None:
            yield from self._discovery.candidates(address)


class DjangoByteCache:
    """The agent's ``ByteCache`` over Django's cache (Redis in production: shared by workers)."""

    prefix = "agent:"

    def _key(self, key: str) -> str:
        # Keys may hold URLs; hashing keeps them short and safe for every cache backend.
        return self.prefix + hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> bytes | None:
        value = django_cache.get(self._key(key))
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        django_cache.set(self._key(key), value, timeout=max(1, int(ttl)))


class HostedFirstRevocationChecker:
    """Our own certificates: the database is the authority, read at once (no fetch, no cache).
    Everyone else's: ``fallback`` (OCSP then CRL over HTTP)."""

    def __init__(self, *, fallback: RevocationChecker) -> None:
        self._fallback = fallback

    def status(
        self, certificate: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> RevocationStatus:
        ca = Certificate.objects.filter(
            fingerprint_sha256=fingerprint(issuer),
            binding=Certificate.Binding.CA,
            source=Certificate.Source.HOSTED,
        ).first()
        if ca is None:
            return self._fallback.status(certificate, issuer, at)
        row = Certificate.objects.filter(fingerprint_sha256=fingerprint(certificate)).first()
        if row is None or row.issued_by_id != ca.pk:
            # Claims to be ours but we never issued it: the fallback will find it unknown/bad.
            return self._fallback.status(certificate, issuer, at)
        if row.revoked_at is not None and row.revoked_at <= at:
            return RevocationStatus.REVOKED
        return RevocationStatus.GOOD


def discovery_resolver() -> CertificateResolver | None:
    """THE place where discovery of non-hosted recipients' certificates (DNS CERT, LDAP) plugs
    in: ``hisp.discovery`` (settings, shared Redis cache)."""
    # Discovery plug-in (issue 4). Imported here because hisp.discovery builds on this module.
    from hisp.discovery import remote_resolver

    return remote_resolver()


def build_environment(*, discovery: CertificateResolver | None = None) -> Environment:
    """The agent's ``Environment`` for this HISP, built from the database and settings."""
    shared_cache = DjangoByteCache()
    allow_private = settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS
    return Environment(
        keys=DatabaseKeyStore(),
        certificates=DatabaseCertificateResolver(
            discovery=discovery if discovery is not None else discovery_resolver()
        ),
        anchors=DatabaseTrustStore(),
        revocation=HostedFirstRevocationChecker(
            fallback=HttpRevocationChecker(
                cache=shared_cache, allow_private_networks=allow_private
            )
        ),
        issuers=HttpIssuerFetcher(cache=shared_cache, allow_private_networks=allow_private),
    )
