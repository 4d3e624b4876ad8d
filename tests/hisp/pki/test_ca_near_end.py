"""A CA in its last days issues nothing: a certificate cannot outlive its CA, so it would live days
or minutes. Staff are told to roll the CA over instead, by the service, the CLI and the console."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from adminconsole.roles import Role, role_groups
from hisp.ca import authority
from hisp.models import Address, AuditEvent, Certificate, Domain, PrivateKey
from hisp.services import identity, pki
from tests.adminconsole.sessions import verified_client

CURE = "roll the CA over first"


def _dying_ca(domain: Domain, *, left: timedelta, settings: Any) -> Certificate:
    """A CA of ``domain``'s scope made long ago, with ``left`` to live, as its issuing CA."""
    made = timezone.now() - settings.HISP_CA_VALIDITY + left
    ca = authority.create_ca(authority.scope_for(domain), at=made)
    Domain.objects.filter(pk=domain.pk).update(issuing_ca=ca)
    domain.refresh_from_db()
    return ca


def test_a_ca_with_less_than_the_minimum_life_left_issues_nothing(
    provider: Domain, settings: Any
) -> None:
    ca = provider.issuing_ca
    end = ca.not_after
    with pytest.raises(authority.CAError, match=f"expires on {end:%Y-%m-%d %H:%M} UTC.*{CURE}"):
        authority.issue(ca, binding=Certificate.Binding.DOMAIN, name=provider.name,
                        domain=provider, at=end - authority.MIN_CA_REMAINING + timedelta(minutes=1))
    row = authority.issue(ca, binding=Certificate.Binding.DOMAIN, name=provider.name,
                          domain=provider, at=end - authority.MIN_CA_REMAINING)
    assert row.not_after == end


def test_issuing_through_the_service_says_to_roll_the_ca_over_and_issues_nothing(
    alice: Address, provider: Domain, settings: Any
) -> None:
    _dying_ca(provider, left=timedelta(days=3), settings=settings)
    count = Certificate.objects.count()
    with pytest.raises(pki.PkiError, match=CURE):
        pki.issue_for(alice.address)
    with pytest.raises(pki.PkiError, match=CURE):
        pki.renew(Certificate.objects.get(address=alice))
    with pytest.raises(identity.IdentityError, match=CURE):
        identity.add_address("carol@hospital.example.org", address_cert=True)
    assert Certificate.objects.count() == count
    assert not Address.objects.filter(address="carol@hospital.example.org").exists()
    assert not AuditEvent.objects.filter(action="certificate.issue").exists()


def test_the_cli_shows_the_refusal_as_a_one_line_error(
    alice: Address, provider: Domain, settings: Any
) -> None:
    _dying_ca(provider, left=timedelta(hours=2), settings=settings)
    with pytest.raises(CommandError, match=f"{CURE} .manage.py anchor rollover {provider.name},"
                       ) as raised:
        call_command("cert", "issue", alice.address)
    assert "\n" not in str(raised.value)


def test_the_console_shows_the_refusal_on_the_issue_page(
    alice: Address, provider: Domain, settings: Any, django_user_model: Any
) -> None:
    sam = django_user_model.objects.create_user(username="sam", password="x" * 20, is_staff=True)
    sam.groups.set(role_groups(tuple(Role)))
    staff: Client = verified_client(sam)
    _dying_ca(provider, left=timedelta(minutes=10), settings=settings)
    count = Certificate.objects.count()
    response = staff.post(reverse("adminconsole:certificate-issue"),
                          {"binding": "address", "subject": alice.address})
    assert response.status_code == 400
    assert CURE in response.content.decode()
    assert Certificate.objects.count() == count


def test_the_renewal_task_leaves_a_certificate_its_dying_ca_cannot_renew(
    alice: Address, provider: Domain, settings: Any
) -> None:
    # A certificate that ends before its CA does (a shorter HISP_CERT_VALIDITY then, or a
    # renewal task that did not run for months) would be due; its CA now has under the
    # minimum left, so it waits for the rollover instead of failing every run of the task.
    ca = provider.issuing_ca
    end = ca.not_after
    settings.HISP_CERT_VALIDITY = timedelta(days=20)
    settings.HISP_CERT_RENEW_AFTER = timedelta(days=10)
    row = authority.issue(ca, binding=Certificate.Binding.ADDRESS, name=alice.address,
                          domain=provider, address=alice, at=end - timedelta(days=45))
    assert row in pki.due_for_renewal(at=end - timedelta(days=31))
    at = end - timedelta(days=28)
    assert row not in pki.due_for_renewal(at=at)
    assert pki.renew_due(at=at) == []


def test_one_certificate_that_cannot_be_renewed_does_not_stop_the_others(
    alice: Address, provider: Domain, settings: Any
) -> None:
    # A key size today's policy no longer issues (a row from an earlier policy) makes renew()
    # refuse that certificate; the task renews the others and logs the one it left.
    settings.HISP_CERT_RENEW_AFTER = timedelta(days=1)
    later = timezone.now() + timedelta(days=2)
    due = sorted(pki.due_for_renewal(at=later), key=lambda row: row.pk)
    assert len(due) >= 2, due
    stuck, others = due[0], due[1:]
    PrivateKey.objects.filter(pk=stuck.private_key_id).update(key_bits=1024)
    renewed = pki.renew_due(at=later)
    assert sorted(row.superseded_by_id is None for row in renewed) == [True] * len(others)
    assert {row.pk for row in Certificate.objects.filter(superseded_by__isnull=False)} == {
        row.pk for row in others}
    stuck.refresh_from_db()
    assert stuck.superseded_by_id is None
