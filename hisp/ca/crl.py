"""Certificate revocation lists for our CAs (RFC 5280 section 5).

A CRL is regenerated in the same transaction as every revocation, and by a scheduled task before
its nextUpdate, so the list at the distribution point is never stale.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from hisp.ca.authority import authority_key_identifier
from hisp.certificates import load
from hisp.keystore import unwrap_private_key
from hisp.models import Certificate, CertificateRevocationList, PrivateKey

REASON_FLAGS: dict[str, x509.ReasonFlags] = {
    Certificate.RevocationReason.UNSPECIFIED: x509.ReasonFlags.unspecified,
    Certificate.RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    Certificate.RevocationReason.CA_COMPROMISE: x509.ReasonFlags.ca_compromise,
    Certificate.RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    Certificate.RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    Certificate.RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    Certificate.RevocationReason.CERTIFICATE_HOLD: x509.ReasonFlags.certificate_hold,
}


def our_cas() -> list[Certificate]:
    return list(
        Certificate.objects.filter(
            binding=Certificate.Binding.CA,
            source=Certificate.Source.HOSTED,
            private_key__isnull=False,
        )
    )


def revoked_entries(ca: Certificate) -> list[Certificate]:
    """One row per serial ``ca`` revoked, its earliest revocation: two rows holding one serial
    (nothing we write makes them, but the database does not forbid it) must not list it twice with
    different dates and reasons (RFC 5280 5.1.2.6: an entry per revoked certificate)."""
    seen: set[str] = set()
    entries = []
    revoked = Certificate.objects.filter(issued_by=ca, revoked_at__isnull=False)
    for row in revoked.order_by("revoked_at", "pk"):
        if row.serial not in seen:
            seen.add(row.serial)
            entries.append(row)
    return entries


def generate(ca: Certificate, *, at: datetime | None = None,
             only_if_due: bool = False) -> CertificateRevocationList:
    """Sign and store a new CRL for ``ca`` listing every certificate it has revoked.

    ``only_if_due``: keep the latest CRL if, once the lock is held, it is no longer due. Fetches
    of the distribution point that all find the CRL due at the same moment then sign one CRL
    between them, not one each.
    """
    now = at or timezone.now()
    with transaction.atomic():
        # Serialise CRL numbers per CA: two revocations at once must not both pick number n+1.
        Certificate.objects.select_for_update().filter(pk=ca.pk).first()
        if only_if_due:
            latest = ca.crls.order_by("-number").first()
            if not is_due(latest, at=now):
                assert latest is not None
                return latest
        last = ca.crls.aggregate(n=Max("number"))["n"] or 0
        number = last + 1
        ca_cert = load(ca)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now)
            .next_update(now + settings.HISP_CRL_VALIDITY)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(authority_key_identifier(ca_cert), critical=False)
        )
        for row in revoked_entries(ca):
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(row.serial, 16))
                .revocation_date(row.revoked_at)
            )
            flag = REASON_FLAGS.get(row.revocation_reason)
            # RFC 5280 5.3.1: reasonCode "unspecified" SHOULD be absent rather than present.
            if flag is not None and flag != x509.ReasonFlags.unspecified:
                entry = entry.add_extension(x509.CRLReason(flag), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        key = unwrap_private_key(PrivateKey.objects.get(pk=ca.private_key_id))
        crl = builder.sign(key, hashes.SHA256())
        del key
        return CertificateRevocationList.objects.create(
            issuer=ca,
            number=number,
            der=crl.public_bytes(serialization.Encoding.DER),
            this_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
        )


def is_due(crl: CertificateRevocationList | None, *, at: datetime | None = None) -> bool:
    now = at or timezone.now()
    return crl is None or crl.next_update - settings.HISP_CRL_REFRESH_BEFORE <= now


def current(ca: Certificate, *, at: datetime | None = None) -> CertificateRevocationList:
    """The CRL to publish for ``ca``: the latest, regenerated first when it is close to expiry."""
    latest = ca.crls.order_by("-number").first()
    if is_due(latest, at=at):
        return generate(ca, at=at, only_if_due=True)
    assert latest is not None
    return latest


def refresh_due(*, at: datetime | None = None) -> int:
    """Regenerate every CRL that is within ``HISP_CRL_REFRESH_BEFORE`` of its nextUpdate."""
    count = 0
    for ca in our_cas():
        latest = ca.crls.order_by("-number").first()
        if is_due(latest, at=at) and generate(ca, at=at, only_if_due=True) != latest:
            count += 1
    return count
