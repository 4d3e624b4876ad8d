"""Renewal and revocation as an operator lives them: a CA in its last months, a renewed
certificate revoked afterwards, checked against what openssl reads in the published CRL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from hisp.ca import crl as crls
from hisp.models import Address, Certificate, Domain
from hisp.services import ca_rollover, identity, pki
from tests.hisp.pki.support import openssl, write_pem


@pytest.fixture
def short_lived_ca(db: None, settings: Any) -> Domain:
    """A domain whose CA has 100 days left: less than a certificate's normal life."""
    settings.HISP_CA_KEY_BITS = 2048
    settings.HISP_CA_VALIDITY = timedelta(days=100)
    return identity.add_domain("hospital.example.org")


def test_certificates_that_already_end_with_their_ca_are_not_renewed_at_every_run(
    short_lived_ca: Domain,
) -> None:
    alice = identity.add_address("alice@hospital.example.org", address_cert=True)
    ca_end = short_lived_ca.issuing_ca.not_after
    assert Certificate.objects.get(address=alice).not_after == ca_end
    # A renewal could not outlast the CA, so it would only churn keys: nothing is due.
    assert list(pki.due_for_renewal()) == []
    assert pki.renew_due() == []
    assert pki.renew_due() == []
    assert Certificate.objects.filter(address=alice).count() == 1


def test_a_rollover_still_renews_certificates_of_a_ca_in_its_last_months(
    short_lived_ca: Domain, settings: Any,
) -> None:
    alice = identity.add_address("alice@hospital.example.org", address_cert=True)
    settings.HISP_CA_VALIDITY = timedelta(days=3650)
    ca_rollover.prepare(short_lived_ca.name)
    activated = ca_rollover.activate(short_lived_ca.name, renew_now=False)
    assert activated.pending == 3  # alice's, the postmaster's and the domain's
    renewed = pki.renew_due()
    assert len(renewed) == 3 and {row.issued_by_id for row in renewed} == {activated.ca.pk}
    current = Certificate.objects.get(address=alice, superseded_by__isnull=True)
    assert current.not_after > short_lived_ca.issuing_ca.not_after
    assert pki.renew_due() == []


def test_a_renewed_certificate_revoked_later_is_listed_and_its_successor_is_not(
    db: None, settings: Any, tmp_path: Path,
) -> None:
    settings.HISP_CA_KEY_BITS = 2048
    domain = identity.add_domain("hospital.example.org")
    alice: Address = identity.add_address("alice@hospital.example.org", address_cert=True)
    old = Certificate.objects.get(address=alice)
    new = pki.renew(old)
    pki.revoke(old, reason=Certificate.RevocationReason.SUPERSEDED)
    (tmp_path / "ca.crl").write_bytes(bytes(crls.current(domain.issuing_ca).der))
    ca = write_pem(tmp_path / "ca.pem", domain.issuing_ca)
    result = openssl("crl", "-inform", "DER", "-in", str(tmp_path / "ca.crl"), "-noout",
                     "-text", "-CAfile", str(ca))
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stderr + result.stdout
    listed = result.stdout.replace(":", "").upper()
    assert old.serial.upper() in listed and new.serial.upper() not in listed
    assert "Superseded" in result.stdout
    assert [row.pk for row in pki.current_certificates(alice.address)] == [new.pk]
    # A partner's validator with our CA and CRL: the old certificate fails, the new one passes.
    crl_pem = openssl("crl", "-inform", "DER", "-in", str(tmp_path / "ca.crl"))
    (tmp_path / "ca.crl.pem").write_text(crl_pem.stdout)
    for row, expected in ((old, "certificate revoked"), (new, "OK")):
        leaf = write_pem(tmp_path / f"{row.pk}.pem", row)
        checked = openssl("verify", "-crl_check", "-CAfile", str(ca), "-CRLfile",
                          str(tmp_path / "ca.crl.pem"), "-purpose", "smimesign", str(leaf))
        assert expected in checked.stdout + checked.stderr, checked
    assert timezone.now() < new.not_after


def test_renewing_again_after_the_successor_was_revoked_says_so_instead_of_renewed(
    db: None, settings: Any,
) -> None:
    settings.HISP_CA_KEY_BITS = 2048
    identity.add_domain("hospital.example.org")
    alice = identity.add_address("alice@hospital.example.org", address_cert=True)
    old = Certificate.objects.get(address=alice)
    new = pki.renew(old)
    assert pki.renew(old) == new  # a second run hands back the same successor
    pki.revoke(new, reason=Certificate.RevocationReason.KEY_COMPROMISE)
    with pytest.raises(pki.PkiError, match="successor has since been revoked"):
        pki.renew(old)
    # Left with only the domain's certificate until staff issue a new one.
    assert [row.binding for row in pki.current_certificates(alice.address)] == ["domain"]
    issued = pki.issue_for(alice.address)
    assert [row.pk for row in pki.current_certificates(alice.address)] == [issued[0].pk]
