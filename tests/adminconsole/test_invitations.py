"""Console: staff invite the patient behind a proofed patient-portal address (sam is verified
staff; charlie is signed in but not staff)."""

from __future__ import annotations

import email
import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import date, timedelta
from email import policy
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from adminconsole.models import ProofingRecord
from hisp.models import Address, AddressGrant, AuditEvent, Certificate, Domain, Invitation
from tests.adminconsole import pkitools
from tests.hisp.mail.partner import Sink
from tests.support.services import free_port

PATIENT = "jane.roe@portal.example.org"
PHI = ("jane", "roe", "Jane Roe", "portal.example.org", "Dr Alice", "diabetes")
LINK = re.compile(r"http://testserver/mail/invitation/([A-Za-z0-9_-]+)/")


@pytest.fixture
def portal(db: None) -> Domain:
    ca = pkitools.store(pkitools.make_ca("Portal CA"), source=Certificate.Source.HOSTED)
    found = Domain.objects.create(
        name="portal.example.org", kind=Domain.Kind.PATIENT_PORTAL, issuing_ca=ca
    )
    Certificate.objects.filter(pk=ca.pk).update(domain=found)
    return found


def _proof(address: Address) -> None:
    ProofingRecord.objects.create(
        address=address,
        proofed_by="Front desk, Dr Alice's practice",
        method=ProofingRecord.Method.IN_PERSON_GOVERNMENT_ID,
        evidence_reference="CASE-1",
        proofed_on=date(2026, 1, 5),
    )


@pytest.fixture
def patient(portal: Domain) -> Address:
    address = Address.objects.create(
        address=PATIENT, domain=portal, display_name="Jane Roe", kind=Address.Kind.PATIENT,
        status=Address.Status.ACTIVE,
    )
    _proof(address)
    return address


def _invite_url(address: Address) -> str:
    return reverse("adminconsole:address-invite", kwargs={"pk": address.pk})


def _issue(client: Client, address: Address, email_address: str = "") -> Any:
    return client.post(_invite_url(address), {"email": email_address})


def _token(response: Any) -> str:
    found = LINK.search(response.content.decode())
    assert found, response.content.decode()
    return found.group(1)


def _actions(**filters: Any) -> list[str]:
    events = AuditEvent.objects.filter(**filters).order_by("id")
    return list(events.values_list("action", flat=True))


# --- Who may invite ---------------------------------------------------------------------------
@pytest.mark.parametrize("who", ["anonymous", "outsider", "unverified"])
def test_it_lets_only_verified_staff_invite_or_revoke(
    who: str, request: pytest.FixtureRequest, patient: Address, sam: Any
) -> None:
    client = {
        "anonymous": lambda: Client(),
        "outsider": lambda: request.getfixturevalue("outsider_client"),
        "unverified": lambda: request.getfixturevalue("unverified_staff_client"),
    }[who]()
    live = Invitation.objects.create(
        address=patient, token_hash="0" * 64, created_by=sam,
        expires_at=timezone.now() + timedelta(days=1),
    )
    revoke = reverse("adminconsole:address-invitation-revoke", args=[patient.pk, live.pk])
    for response in (client.get(_invite_url(patient)), _issue(client, patient, "x@example.net"),
                     client.post(revoke)):
        assert response.status_code in (302, 404)
        if who == "outsider":
            assert response.status_code == 404
    assert Invitation.objects.count() == 1
    assert Invitation.objects.get().revoked_at is None
    assert _actions(action__startswith="invitation.") == []


# --- Which addresses ---------------------------------------------------------------------------
def test_it_refuses_an_unproofed_patient_address(staff_client: Client, patient: Address) -> None:
    patient.proofing_records.all().delete()
    detail = staff_client.get(reverse("adminconsole:address-detail", args=[patient.pk]))
    assert b"Record how this patient&#x27;s identity was proofed" in detail.content
    assert b'action="' + _invite_url(patient).encode() not in detail.content
    response = _issue(staff_client, patient, "jane@home.example.net")
    assert response.status_code == 400
    assert b"identity was proofed before inviting them" in response.content
    assert not Invitation.objects.exists()


def test_it_refuses_a_clinician_address(staff_client: Client, alice_address: Address) -> None:
    _proof(alice_address)
    Address.objects.filter(pk=alice_address.pk).update(status=Address.Status.ACTIVE)
    response = _issue(staff_client, alice_address)
    assert response.status_code == 400
    assert b"Only patient addresses on a patient-portal domain get invitations" in response.content
    assert not Invitation.objects.exists()
    # Clinician pages show no invitation section at all.
    detail = staff_client.get(reverse("adminconsole:address-detail", args=[alice_address.pk]))
    assert b"Patient invitation" not in detail.content


def test_it_refuses_a_patient_address_outside_a_portal_domain(
    staff_client: Client, domain: Domain
) -> None:
    address = Address.objects.create(address="pat@direct.example.org", domain=domain,
                                     kind=Address.Kind.PATIENT, status=Address.Status.ACTIVE)
    _proof(address)
    assert _issue(staff_client, address).status_code == 400
    assert not Invitation.objects.exists()


def test_it_refuses_a_proofed_address_not_yet_active(
    staff_client: Client, patient: Address
) -> None:
    Address.objects.filter(pk=patient.pk).update(status=Address.Status.PENDING)
    response = _issue(staff_client, patient)
    assert response.status_code == 400
    assert b"activate it before inviting the patient" in response.content
    assert not Invitation.objects.exists()


def test_it_refuses_when_the_owner_is_staff_or_the_user_name_is_taken(
    staff_client: Client, patient: Address, make_user: Any
) -> None:
    namesake = make_user(PATIENT)
    response = _issue(staff_client, patient)
    assert response.status_code == 400
    assert b"exists but does not own this address" in response.content
    namesake.is_staff = True
    namesake.save()
    AddressGrant.objects.create(user=namesake, address=patient, role=AddressGrant.Role.OWNER)
    response = _issue(staff_client, patient)
    assert b"The owner is a staff account" in response.content
    assert not Invitation.objects.exists()


# --- Issuing, showing once, revoking ------------------------------------------------------------
def test_it_shows_the_link_once_and_stores_only_its_hash(
    staff_client: Client, patient: Address, sam: Any, settings: Any
) -> None:
    settings.HISP_INVITATION_TTL = timedelta(days=3)
    response = _issue(staff_client, patient)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = _token(response)
    assert len(token) >= 43  # 256 bits, URL-safe base64
    assert b"No email was sent" in response.content
    invitation = Invitation.objects.get()
    assert invitation.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert invitation.created_by == sam and invitation.email == ""
    assert abs((invitation.expires_at - timezone.now()) - timedelta(days=3)).total_seconds() < 60
    # The token is nowhere: not in the row, not in the audit, not on the address page after.
    row = json.dumps(list(Invitation.objects.values()), default=str)
    audit = json.dumps(list(AuditEvent.objects.values("detail", "object_id")), default=str)
    assert token not in row and token not in audit
    detail = staff_client.get(reverse("adminconsole:address-detail", args=[patient.pk]))
    assert token.encode() not in detail.content
    assert b"No email: link handed over" in detail.content
    event = AuditEvent.objects.get(action="invitation.issue")
    assert event.actor == sam and event.object_id == str(invitation.pk)
    assert event.detail["address"] == PATIENT


def test_inviting_again_revokes_the_open_invitation(staff_client: Client, patient: Address) -> None:
    first = _token(_issue(staff_client, patient, "jane@home.example.net"))
    second = _token(_issue(staff_client, patient, "jane@home.example.net"))
    assert first != second
    old, new = Invitation.objects.order_by("id")
    assert old.revoked_at is not None and new.revoked_at is None
    assert _actions(action__startswith="invitation.") == [
        "invitation.issue", "invitation.emailed",
        "invitation.revoke", "invitation.issue", "invitation.emailed",
    ]
    assert AuditEvent.objects.get(action="invitation.revoke").detail["reason"] == "replaced"


def test_the_page_lists_the_live_invitation_and_revokes_it(
    staff_client: Client, patient: Address
) -> None:
    _issue(staff_client, patient, "jane@home.example.net")
    invitation = Invitation.objects.get()
    detail = staff_client.get(reverse("adminconsole:address-detail", args=[patient.pk]))
    assert b"jane@home.example.net" in detail.content
    assert invitation.expires_at.strftime("%Y-%m-%d").encode() in detail.content
    revoke = reverse("adminconsole:address-invitation-revoke", args=[patient.pk, invitation.pk])
    assert staff_client.get(revoke).status_code == 405
    response = staff_client.post(revoke, follow=True)
    assert b"Invitation revoked" in response.content
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    assert b"jane@home.example.net" not in response.content
    # A second revocation changes nothing and says so.
    again = staff_client.post(revoke, follow=True)
    assert b"used or revoked already" in again.content
    assert _actions(action="invitation.revoke") == ["invitation.revoke"]
    assert AuditEvent.objects.get(action="invitation.revoke").detail["reason"] == "staff"


def test_a_revoke_url_for_another_address_is_404(
    staff_client: Client, patient: Address, alice_address: Address
) -> None:
    _issue(staff_client, patient)
    invitation = Invitation.objects.get()
    url = reverse("adminconsole:address-invitation-revoke", args=[alice_address.pk, invitation.pk])
    assert staff_client.post(url).status_code == 404
    invitation.refresh_from_db()
    assert invitation.revoked_at is None


# --- Hostile input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        "a" * 250 + "@example.net",
        "jane\x01@example.net",
        "jane@example.net\r\nBcc: everyone@example.net",
        "jane\x00@example.net",
        "<script>@example.net",
        "not an address",
    ],
)
def test_hostile_email_input_gets_a_clear_error(
    staff_client: Client, patient: Address, value: str
) -> None:
    response = _issue(staff_client, patient, value)
    assert response.status_code == 400
    assert b'class="errorlist' in response.content
    assert not Invitation.objects.exists()


# --- Email through a real SMTP server -----------------------------------------------------------
@pytest.fixture
def smtp_sink(settings: Any) -> Any:
    with Sink() as sink:
        # pytest-django swaps in the locmem backend for tests; point at the real server.
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.controller.port
        settings.DEFAULT_FROM_EMAIL = "no-reply@hisp.example.org"
        yield sink


def test_the_email_carries_the_link_and_no_phi(
    staff_client: Client, patient: Address, smtp_sink: Any
) -> None:
    response = _issue(staff_client, patient, "jane@home.example.net")
    assert b"Emailed to jane@home.example.net" in response.content
    assert smtp_sink.handler.arrived.wait(10)
    [received] = smtp_sink.handler.messages
    assert received.rcpt_tos == ["jane@home.example.net"]
    assert received.mail_from == "no-reply@hisp.example.org"
    message = email.message_from_bytes(received.data, policy=policy.default)
    text = message.get_body(("plain",)).get_content()
    whole = f"{message['Subject']}\n{text}"
    for word in PHI:
        assert word.lower() not in whole.lower(), word
    assert "invited to set up your secure health mailbox" in text
    invitation = Invitation.objects.get()
    assert f"valid until {timezone.localtime(invitation.expires_at):%d %B %Y}" in text
    # The link in the email is the one the patient follows.
    token = LINK.search(text).group(1)
    cache.clear()  # failure counts per client IP outlive other tests' databases
    assert invitation.token_hash == hashlib.sha256(token.encode()).hexdigest()
    followed = Client().get(reverse("webmail:invitation", kwargs={"token": token}), follow=True)
    assert followed.status_code == 200
    assert f"Set up your secure mailbox for {PATIENT}".encode() in followed.content
    assert _actions(action__startswith="invitation.") == [
        "invitation.issue", "invitation.emailed", "invitation.open",
    ]


def test_a_relay_that_is_down_leaves_the_link_for_staff(
    staff_client: Client, patient: Address, settings: Any
) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens
    response = _issue(staff_client, patient, "jane@home.example.net")
    assert response.status_code == 200
    assert b"could not be sent" in response.content
    _token(response)
    assert Invitation.objects.get().revoked_at is None
    assert _actions(action="invitation.email-failed") == ["invitation.email-failed"]


def test_email_url_and_default_from_email_are_read_from_the_environment(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HISP_DATA_DIR": str(tmp_path),
        "HISP_HOSTNAME": "mail.hisp.example.org",
        "EMAIL_URL": "smtp+tls://relay%40hisp:s3cret@relay.example.org:587",
        "DJANGO_SETTINGS_MODULE": "hisp.settings",
    }
    env.pop("DEFAULT_FROM_EMAIL", None)
    code = (
        "from django.conf import settings as s; import json; print(json.dumps([s.EMAIL_BACKEND, "
        "s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_HOST_USER, s.EMAIL_USE_TLS, s.DEFAULT_FROM_EMAIL]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert json.loads(out.stdout) == [
        "django.core.mail.backends.smtp.EmailBackend", "relay.example.org", 587, "relay@hisp",
        True, "no-reply@mail.hisp.example.org",
    ]


def test_email_url_defaults_to_the_local_relay(tmp_path: Path) -> None:
    env = {**os.environ, "HISP_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "hisp.settings"}
    env.pop("EMAIL_URL", None)
    code = "from django.conf import settings as s; print(s.EMAIL_HOST, s.EMAIL_PORT)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["localhost", "25"]


def test_users_are_untouched_by_issuing(staff_client: Client, patient: Address) -> None:
    before = get_user_model().objects.count()
    _issue(staff_client, patient, "jane@home.example.net")
    assert get_user_model().objects.count() == before
    assert not patient.grants.exists()
