"""Renewal from 12 months, and rollover: mail encrypted to the old certificate still decrypts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from agent import cms
from agent.protect import protect
from agent.unprotect import unprotect
from hisp.agent_env import DatabaseKeyStore, build_environment
from hisp.certificates import fingerprint, load
from hisp.models import Address, AuditEvent, Certificate, Domain
from hisp.services import pki
from tests.hisp.pki.support import openssl, write_pem

MESSAGE = (
    b"From: bob@hospital.example.org\r\nTo: alice@hospital.example.org\r\n"
    b"Subject: referral\r\nMessage-ID: <r1@hospital.example.org>\r\n"
    b"Date: Tue, 24 Nov 2026 05:00:00 +0000\r\n\r\nPlease see the patient.\r\n"
)


def _current(address: Address) -> Certificate:
    return Certificate.objects.get(address=address, superseded_by__isnull=True)


def test_nothing_is_due_for_renewal_before_twelve_months(alice: Address) -> None:
    assert not pki.due_for_renewal().exists()
    assert pki.renew_due() == []


def test_certificates_are_due_from_twelve_months_and_renewed_once(alice: Address,
                                                                  provider: Domain) -> None:
    later = timezone.now() + timedelta(days=366)
    due = set(pki.due_for_renewal(at=later))
    assert {row.binding for row in due} == {"address", "domain"}
    old = _current(alice)
    renewed = pki.renew_due(at=later)
    assert len(renewed) == 3  # alice's, the domain's postmaster's and the domain's
    assert {r.bound_name for r in renewed} == {alice.address, f"postmaster@{provider.name}",
                                               provider.name}
    old.refresh_from_db()
    new = old.superseded_by
    assert new is not None and new.bound_name == alice.address
    assert new.private_key_id != old.private_key_id  # a new key, not the old one re-certified
    assert new.not_before > old.not_before
    # Idempotent: a second run (or a second worker) renews nothing more.
    assert pki.renew_due(at=later) == []
    assert pki.renew(old) == new
    assert AuditEvent.objects.filter(action="certificate.renew").count() == 3


def test_renewed_certificate_is_published_and_old_one_is_not(alice: Address) -> None:
    old = _current(alice)
    new = pki.renew(old)
    assert [r.pk for r in pki.current_certificates(alice.address)] == [new.pk]


def test_revoked_certificate_is_not_renewed(alice: Address) -> None:
    revoked = pki.revoke(_current(alice))
    assert revoked not in set(pki.due_for_renewal(at=timezone.now() + timedelta(days=400)))


def test_rollover_agent_mail_encrypted_to_old_certificate_still_decrypts(
    alice: Address, bob: Address
) -> None:
    env = build_environment()
    now = timezone.now()
    protected = protect(MESSAGE, sender=bob.address, recipients=[alice.address], env=env, at=now)
    assert protected.message is not None and protected.encrypted_to == (alice.address,)
    old = _current(alice)
    assert [fingerprint(c) for c in protected.recipient_certificates[alice.address]] == [
        old.fingerprint_sha256]
    new = pki.renew(old)
    # New mail goes to the new certificate ...
    again = protect(MESSAGE, sender=bob.address, recipients=[alice.address], env=env, at=now)
    assert [fingerprint(c) for c in again.recipient_certificates[alice.address]] == [
        new.fingerprint_sha256]
    # ... and the mail already in flight to the old one still opens.
    opened = unprotect(protected.message, recipients=[alice.address], env=env, at=now)
    assert b"Please see the patient." in opened.message
    assert alice.address in opened.delivered


def test_rollover_openssl_encrypted_to_old_certificate_decrypts_with_stored_key(
    alice: Address, tmp_path: Path
) -> None:
    old = _current(alice)
    recipient = write_pem(tmp_path / "old.pem", old)
    pki.renew(old)
    body = tmp_path / "body.txt"
    body.write_bytes(b"Content-Type: text/plain\r\n\r\nin flight\r\n")
    result = openssl("cms", "-encrypt", "-aes256", "-binary", "-in", str(body), "-outform", "DER",
                     "-out", str(tmp_path / "env.der"), str(recipient))
    assert result.returncode == 0, result.stderr
    identities = DatabaseKeyStore().decryption_identities([alice.address])
    assert fingerprint(identities[0].certificate) != old.fingerprint_sha256  # newest first
    plaintext = cms.decrypt((tmp_path / "env.der").read_bytes(), identities=identities)
    assert plaintext == body.read_bytes()


def test_signing_uses_the_new_certificate_after_renewal(alice: Address) -> None:
    new = pki.renew(_current(alice))
    (first, *_rest) = DatabaseKeyStore().signing_identities(alice.address)
    assert fingerprint(first.certificate) == new.fingerprint_sha256
    assert load(new) == first.certificate
