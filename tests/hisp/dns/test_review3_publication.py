"""What we publish (CERT records from our responder, the LDIF for a directory) is only what the
issuing CA still stands behind: nothing under a CA that is revoked, expired or not yet valid,
and nothing the CA's own revocation record (by serial, as its CRL and OCSP say) lists."""

from __future__ import annotations

from datetime import timedelta

import dns.message
import dns.rdatatype
import pytest
from django.utils import timezone

from hisp.directory import ldif_text
from hisp.dns.records import build_snapshot
from hisp.models import Address, Certificate
from tests.hisp.dns.conftest import DOMAIN, running_responder

pytestmark = pytest.mark.django_db(transaction=True)

ALICE = f"alice.{DOMAIN}"


def published_over_dns() -> dict[str, set[bytes]]:
    """CERT records at alice's name and the apex, asked of a freshly started responder over TCP
    (CERT answers are too large for UDP) with dnspython."""
    with running_responder() as responder:
        return {
            name: {
                rdata.certificate
                for rrset in responder.query(name, "CERT", tcp=True).answer
                if rrset.rdtype == dns.rdatatype.CERT
                for rdata in rrset
            }
            for name in (ALICE, DOMAIN)
        }


def ldif_entries() -> set[str]:
    return {line for line in ldif_text(DOMAIN).splitlines() if line.startswith("dn: ")}


def current(name: str) -> Certificate:
    """The certificate published for ``name``: the encryption one (with separate keys, the
    signing one is never published), not the domain's CA."""
    return Certificate.objects.exclude(binding=Certificate.Binding.CA).get(
        bound_name=name,
        revoked_at__isnull=True,
        usage__in=(Certificate.Usage.DUAL, Certificate.Usage.ENCRYPTION),
    )


def entry(mail: str) -> str:
    return f"dn: mail={mail},dc=hospital,dc=example,dc=org"


def ours_published(alice: Address) -> tuple[int, int]:
    """How many of alice's and the domain's certificates DNS serves, how many LDIF entries."""
    ders = {bytes(current(alice.address).der), bytes(current(DOMAIN).der)}
    in_dns = set().union(*published_over_dns().values())
    return len(ders & in_dns), len({entry(alice.address), entry(DOMAIN)} & ldif_entries())


CA_CHANGES = {
    "revoked": lambda now: {
        "revoked_at": now, "revocation_reason": Certificate.RevocationReason.CA_COMPROMISE
    },
    "expired": lambda now: {"not_after": now - timedelta(minutes=1)},
    "not_yet_valid": lambda now: {"not_before": now + timedelta(days=1)},
}


@pytest.mark.parametrize("change", CA_CHANGES)
def test_nothing_under_an_unusable_issuing_ca_is_published(alice: Address, change: str) -> None:
    assert ours_published(alice) == (2, 2)
    ca = current(alice.address).issued_by
    assert ca is not None and ca == current(DOMAIN).issued_by
    Certificate.objects.filter(pk=ca.pk).update(**CA_CHANGES[change](timezone.now()))
    assert ours_published(alice) == (0, 0)


def test_a_serial_the_issuing_ca_lists_as_revoked_is_not_published(alice: Address) -> None:
    leaf = current(alice.address)
    assert ours_published(alice) == (2, 2)
    # The CA's revocation record is by serial: its CRL lists, its OCSP responder answers every
    # row it issued under it, whichever row carries the revocation.
    Certificate.objects.create(
        der=leaf.der, subject=leaf.subject, issuer=leaf.issuer, serial=leaf.serial,
        not_before=leaf.not_before, not_after=leaf.not_after, fingerprint_sha256="0" * 64,
        binding=Certificate.Binding.ADDRESS, bound_name=f"old-alice@{DOMAIN}",
        source=Certificate.Source.HOSTED, issued_by=leaf.issued_by,
        revoked_at=timezone.now(), revocation_reason=Certificate.RevocationReason.KEY_COMPROMISE,
    )
    assert bytes(leaf.der) not in published_over_dns()[ALICE]
    assert entry(alice.address) not in ldif_entries()
    # The domain-bound certificate has its own serial: still published.
    assert published_over_dns()[DOMAIN] == {bytes(current(DOMAIN).der)}


def test_the_zones_are_rebuilt_when_the_issuing_ca_expires(alice: Address) -> None:
    ca = current(alice.address).issued_by
    assert ca is not None
    soon = timezone.now() + timedelta(hours=1)
    Certificate.objects.filter(pk=ca.pk).update(not_after=soon)
    # Our certificates end no later than their CA (hisp.ca.authority), a leaf imported with its
    # key may not: the snapshot must not outlive the CA either.
    assert build_snapshot().expires == soon
