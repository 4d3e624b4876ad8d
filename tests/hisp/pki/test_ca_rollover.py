"""Replacing a hosted domain's issuing CA: prepare a trusted successor, then activate it."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from agent.protect import protect
from agent.unprotect import unprotect
from hisp.agent_env import build_environment
from hisp.ca import crl as crls
from hisp.certificates import fingerprint
from hisp.models import Address, AuditEvent, Certificate, Domain, TrustAnchor
from hisp.services import ca_rollover, identity, trust
from hisp.services.trust import TrustError
from tests.hisp.pki.support import openssl, write_pem

MESSAGE = (
    b"From: alice@hospital.example.org\r\nTo: bob@hospital.example.org\r\n"
    b"Subject: referral\r\nMessage-ID: <roll-1@hospital.example.org>\r\n"
    b"Date: Tue, 24 Nov 2026 05:00:00 +0000\r\n\r\nPlease see the patient.\r\n"
)


def _current(address: Address) -> Certificate:
    return Certificate.objects.get(address=address, superseded_by__isnull=True)


def _issuing(domain: Domain) -> Certificate:
    domain.refresh_from_db()
    assert domain.issuing_ca is not None
    return domain.issuing_ca


def test_prepare_makes_a_trusted_successor_that_issues_nothing_yet(
    provider: Domain, alice: Address
) -> None:
    old = _issuing(provider)
    new = ca_rollover.prepare(provider.name, actor="tester")
    assert new.pk != old.pk and new.binding == Certificate.Binding.CA
    assert new.fingerprint_sha256 != old.fingerprint_sha256
    assert new.private_key_id not in (None, old.private_key_id)  # a new key
    # Nothing changes for issuance until activation ...
    assert _issuing(provider) == old
    carol = identity.add_address("carol@hospital.example.org", address_cert=True)
    assert _current(carol).issued_by_id == old.pk
    # ... but the domain already trusts the successor both ways, and its CRL is published.
    anchor = TrustAnchor.objects.get(domain=provider, certificate=new)
    assert anchor.incoming and anchor.outgoing
    assert new.crls.exists()
    # Preparing again (a second operator, a re-run script) finds the same successor.
    assert ca_rollover.prepare(provider.name) == new
    assert ca_rollover.pending(provider.name) == new
    events = AuditEvent.objects.filter(action="ca.rollover-prepare")
    assert events.count() == 1
    assert events.get().detail["previous"] == old.fingerprint_sha256


def test_the_successor_is_exported_for_partners_only_while_a_rollover_is_under_way(
    provider: Domain,
) -> None:
    with pytest.raises(TrustError, match="no CA rollover is under way"):
        trust.export_anchor(provider.name, successor=True)
    new = ca_rollover.prepare(provider.name)
    exported = trust.export_anchor(provider.name, successor=True)
    assert exported.certificate == new
    assert trust.export_anchor(provider.name).certificate == _issuing(provider) != new


def test_activate_without_a_prepared_successor_is_refused(provider: Domain) -> None:
    with pytest.raises(ca_rollover.RolloverError, match="no successor CA is prepared"):
        ca_rollover.activate(provider.name)
    with pytest.raises(ca_rollover.RolloverError, match="not hosted here"):
        ca_rollover.activate("elsewhere.example.org")


def test_activation_renews_every_certificate_under_the_successor(
    provider: Domain, alice: Address, bob: Address, tmp_path: Path
) -> None:
    old_ca = _issuing(provider)
    old_alice = _current(alice)
    new_ca = ca_rollover.prepare(provider.name)
    issued_by_old = set(
        Certificate.objects.filter(issued_by=old_ca, superseded_by__isnull=True)
        .values_list("bound_name", "usage")
    )
    done = ca_rollover.activate(provider.name, actor="tester")

    assert done.ca == new_ca and done.previous == old_ca and done.domains == [provider.name]
    assert _issuing(provider) == new_ca
    old_ca.refresh_from_db()
    assert old_ca.superseded_by_id == new_ca.pk and old_ca.revoked_at is None
    # Every certificate the old CA had in use now has a successor issued by the new CA.
    assert {(c.bound_name, c.usage) for c in done.renewed} == issued_by_old
    assert all(c.issued_by_id == new_ca.pk for c in done.renewed)
    assert not Certificate.objects.filter(
        issued_by=old_ca, superseded_by__isnull=True, revoked_at__isnull=True
    ).exists()
    # Independently checked: the new certificates chain to the new CA, not to the old one.
    leaf = write_pem(tmp_path / "alice.pem", _current(alice))
    assert openssl("verify", "-CAfile", str(write_pem(tmp_path / "new.pem", new_ca)),
                   "-purpose", "smimesign", str(leaf)).returncode == 0
    assert openssl("verify", "-CAfile", str(write_pem(tmp_path / "old.pem", old_ca)),
                   str(leaf)).returncode != 0
    # Re-running the activation does nothing more.
    with pytest.raises(ca_rollover.RolloverError):
        ca_rollover.activate(provider.name)
    assert AuditEvent.objects.filter(action="ca.rollover-activate").count() == 1
    assert _current(alice) != old_alice


def test_mail_keeps_flowing_across_the_rollover(provider: Domain, alice: Address,
                                                bob: Address) -> None:
    env = build_environment()
    now = timezone.now()
    in_flight = protect(MESSAGE, sender=alice.address, recipients=[bob.address], env=env, at=now)
    reply = MESSAGE.replace(b"From: alice@", b"From: bob@").replace(b"To: bob@", b"To: alice@")
    to_alice = protect(reply, sender=bob.address, recipients=[alice.address], env=env, at=now)
    ca_rollover.prepare(provider.name)
    ca_rollover.activate(provider.name)
    env = build_environment()
    # Signed by, and encrypted to, certificates of the old CA: still accepted and opened.
    for message, recipient in ((in_flight, bob), (to_alice, alice)):
        assert message.message is not None
        opened = unprotect(message.message, recipients=[recipient.address], env=env, at=now)
        assert recipient.address in opened.delivered, opened.rejected
    # New mail is signed with the renewed certificate and validates through the new anchor.
    fresh = protect(MESSAGE, sender=alice.address, recipients=[bob.address], env=env, at=now)
    assert fresh.message is not None
    opened = unprotect(fresh.message, recipients=[bob.address], env=env, at=now)
    assert bob.address in opened.delivered, opened.rejected
    assert fingerprint(opened.signer) == _current(alice).fingerprint_sha256


def test_the_old_ca_keeps_publishing_its_crl(provider: Domain, alice: Address) -> None:
    """Certificates it issued stay in use until they expire: relying parties still need its
    CRL, and a revocation after the rollover must reach them."""
    old_ca = _issuing(provider)
    ca_rollover.prepare(provider.name)
    ca_rollover.activate(provider.name)
    before = old_ca.crls.order_by("-number").first()
    assert before is not None
    assert crls.refresh_due(at=before.next_update) >= 1
    after = old_ca.crls.order_by("-number").first()
    assert after is not None and after.number > before.number


def test_community_ca_rolls_over_for_every_domain_that_shares_it(db: None, settings: Any) -> None:
    settings.HISP_CA_SCOPE = "community"
    first = identity.add_domain("first.example.org")
    second = identity.add_domain("second.example.org")
    shared = _issuing(first)
    assert _issuing(second) == shared
    new = ca_rollover.prepare(second.name)
    # A domain added while the rollover is under way still issues from the CA partners trust.
    third = identity.add_domain("third.example.org")
    assert _issuing(third) == shared
    done = ca_rollover.activate(first.name)
    assert sorted(done.domains) == ["first.example.org", "second.example.org",
                                    "third.example.org"]
    for domain in (first, second, third):
        assert _issuing(domain) == new
        assert TrustAnchor.objects.filter(domain=domain, certificate=new, incoming=True,
                                          outgoing=True).exists()


def _cli(*args: str) -> str:
    out = StringIO()
    call_command("anchor", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_operator_cli_runs_the_rollover(provider: Domain, alice: Address,
                                        tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no CA rollover is under way"):
        _cli("export", provider.name, "--next")
    with pytest.raises(CommandError, match="no successor CA is prepared"):
        _cli("rollover", provider.name, "--activate")
    prepared = json.loads(_cli("rollover", provider.name, "--json"))
    assert prepared["step"] == "prepared"
    _cli("export", provider.name, "--next", "--out", str(tmp_path / "next.pem"))
    assert Certificate.objects.get(
        fingerprint_sha256=prepared["fingerprint"]
    ) == ca_rollover.pending(provider.name)
    assert b"BEGIN CERTIFICATE" in (tmp_path / "next.pem").read_bytes()
    activated = json.loads(_cli("rollover", provider.name, "--activate", "--json"))
    assert activated["step"] == "activated"
    assert activated["fingerprint"] == prepared["fingerprint"]
    assert activated["domains"] == [provider.name]
    assert len(activated["renewed"]) >= 2  # the domain's and alice's certificates at least
    # The exported anchor is now the new CA.
    _cli("export", provider.name, "--out", str(tmp_path / "now.pem"))
    assert (tmp_path / "now.pem").read_bytes() == (tmp_path / "next.pem").read_bytes()
    text = _cli("rollover", provider.name)
    assert "successor CA prepared" in text
