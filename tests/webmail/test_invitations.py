"""Webmail: a patient accepts an invitation (issued in the console) at /mail/invitation/<token>/,
chooses a password, is signed in, must enrol an authenticator, then reads the inbox."""

from __future__ import annotations

import hashlib
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import Address, AddressGrant, AuditEvent, Domain, Invitation
from tests.factories import AddressFactory, DomainFactory, UserFactory
from tests.webmail.otp import current_code
from webmail import invitations

PATIENT = "jane.roe@portal.example"
GOOD = "plum tree orchard 42"


@pytest.fixture(autouse=True)
def _fresh_failure_counts() -> None:
    # The failure counters live in the cache, which outlives each test's rolled-back database.
    cache.clear()


def patient_address(address: str = PATIENT) -> Address:
    portal = DomainFactory(name="portal.example", kind=Domain.Kind.PATIENT_PORTAL)
    return AddressFactory(address=address, domain=portal, kind=Address.Kind.PATIENT,
                          status=Address.Status.ACTIVE, display_name="Jane Roe")


@pytest.fixture
def patient(db: None) -> Address:
    return patient_address()


def invite(address: Address, **fields: Any) -> tuple[str, Invitation]:
    token = Invitation.new_token()
    fields.setdefault("expires_at", timezone.now() + timedelta(days=7))
    row = Invitation.objects.create(address=address, token_hash=Invitation.hash_token(token),
                                    email="jane@home.example.net", **fields)
    return token, row


def link(token: str) -> str:
    return reverse("webmail:invitation", kwargs={"token": token})


SET_UP = "/mail/invitation/set-up/"


def open_link(client: Client, token: str) -> Any:
    return client.get(link(token), follow=True)


def accept(client: Client, token: str, password: str = GOOD, again: str | None = None) -> Any:
    open_link(client, token)
    return client.post(SET_UP, {"new_password1": password,
                                "new_password2": password if again is None else again})


def actions(prefix: str = "invitation.") -> list[str]:
    return list(AuditEvent.objects.filter(action__startswith=prefix).order_by("id")
                .values_list("action", flat=True))


# --- A good link --------------------------------------------------------------------------------
def test_a_valid_link_shows_the_set_up_page_without_the_token_in_its_url(patient: Address) -> None:
    token, row = invite(patient)
    client = Client()
    response = client.get(link(token))
    assert response.status_code == 302 and response["Location"] == SET_UP
    assert response["Referrer-Policy"] == "no-referrer"
    page = client.get(SET_UP)
    assert page.status_code == 200
    assert f"Set up your secure mailbox for {PATIENT}".encode() in page.content
    assert token.encode() not in page.content
    assert "no-store" in page["Cache-Control"]
    assert actions() == ["invitation.open"]


def test_accepting_creates_the_owner_signs_in_and_requires_totp_before_the_inbox(
    patient: Address,
) -> None:
    token, row = invite(patient)
    client = Client()
    response = accept(client, token)
    enrol = reverse("webmail:otp-enrol")
    assert response.status_code == 302 and response["Location"].startswith(enrol)
    user = get_user_model().objects.get(username=PATIENT)
    assert user.check_password(GOOD) and user.email == "jane@home.example.net"
    assert AddressGrant.objects.get(address=patient).user == user
    assert AddressGrant.objects.get(address=patient).role == AddressGrant.Role.OWNER
    row.refresh_from_db()
    assert row.accepted_at is not None and row.accepted_by == user
    # Signed in with the password only: the inbox sends the patient to enrolment.
    inbox = client.get(reverse("webmail:inbox"))
    assert inbox.status_code == 302 and inbox["Location"].startswith(enrol)
    assert client.get(response["Location"]).status_code == 200
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    done = client.post(response["Location"], {"token": current_code(device)})
    assert done.status_code == 302 and done["Location"] == reverse("webmail:inbox")
    inbox = client.get(reverse("webmail:inbox"), follow=True)
    assert inbox.status_code == 200
    assert b"Inbox" in inbox.content and PATIENT.encode() in inbox.content
    event = AuditEvent.objects.get(action="invitation.accept")
    assert event.actor == user and event.object_id == str(row.pk)
    assert event.detail["account"] == "created"


def test_an_existing_owner_gets_the_password_and_keeps_the_account(patient: Address) -> None:
    owner = UserFactory(username=PATIENT, email="")
    AddressGrant.objects.create(user=owner, address=patient, role=AddressGrant.Role.OWNER)
    device = TOTPDevice.objects.create(user=owner, name="phone", confirmed=True)
    token, _ = invite(patient)
    response = accept(Client(), token)
    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password(GOOD) and owner.email == "jane@home.example.net"
    assert get_user_model().objects.filter(username=PATIENT).count() == 1
    assert TOTPDevice.objects.filter(pk=device.pk, confirmed=True).exists()
    assert AuditEvent.objects.get(action="invitation.accept").detail["account"] == "existing"


# --- Bad links: one neutral answer ---------------------------------------------------------------
def test_expired_revoked_used_unknown_and_forged_links_get_the_same_404(patient: Address) -> None:
    expired, _ = invite(patient_address("a@portal.example"),
                        expires_at=timezone.now() - timedelta(seconds=1))
    revoked, _ = invite(patient_address("b@portal.example"), revoked_at=timezone.now())
    used, row = invite(patient)
    accept(Client(), used)
    row.refresh_from_db()
    assert row.accepted_at is not None
    # The stored hash is no key: the lookup hashes what it is given.
    forged = row.token_hash
    bodies = set()
    for token in (expired, revoked, used, "x" * 43, forged, "y" * 5000):
        response = Client().get(link(token))
        assert response.status_code == 404, token
        assert b"This invitation link does not work" in response.content
        assert "no-store" in response["Cache-Control"]
        bodies.add(response.content)
    assert len(bodies) == 1  # nothing tells one failure from another
    reasons = list(AuditEvent.objects.filter(action="invitation.token-failed").order_by("id")
                   .values_list("detail__reason", flat=True))
    assert reasons == ["expired", "revoked", "used", "unknown", "unknown", "malformed"]


def test_an_address_taken_out_of_service_makes_its_link_fail(patient: Address) -> None:
    token, _ = invite(patient)
    Address.objects.filter(pk=patient.pk).update(status=Address.Status.SUSPENDED)
    assert Client().get(link(token)).status_code == 404
    assert AuditEvent.objects.get(action="invitation.token-failed").detail["reason"] == (
        "address-unavailable")


def test_a_revocation_after_opening_the_link_stops_the_set_up(patient: Address) -> None:
    token, row = invite(patient)
    client = Client()
    open_link(client, token)
    Invitation.objects.filter(pk=row.pk).update(revoked_at=timezone.now())
    response = client.post(SET_UP, {"new_password1": GOOD, "new_password2": GOOD})
    assert response.status_code == 404
    assert not get_user_model().objects.filter(username=PATIENT).exists()


def test_the_set_up_page_without_an_opened_link_is_the_neutral_404(patient: Address) -> None:
    response = Client().get(SET_UP)
    assert response.status_code == 404
    assert b"This invitation link does not work" in response.content


def test_failed_links_are_throttled_per_client_ip(patient: Address) -> None:
    token, _ = invite(patient)
    client = Client(REMOTE_ADDR="198.51.100.7")
    for n in range(invitations.FAILURE_LIMIT):
        assert client.get(link(f"wrong-{n}")).status_code == 404
    # Now even a good link answers "too many attempts" from that address...
    throttled = client.get(link(token))
    assert throttled.status_code == 429
    assert b"Too many attempts" in throttled.content
    assert client.get(link("wrong-again")).status_code == 429
    # ...and the audit log stops growing; another address is unaffected.
    assert AuditEvent.objects.filter(action="invitation.token-failed").count() == (
        invitations.FAILURE_LIMIT)
    last = AuditEvent.objects.filter(action="invitation.token-failed").latest("id")
    assert last.detail["throttled"] is True
    assert str(last.client_address) == "198.51.100.7"
    assert Client(REMOTE_ADDR="198.51.100.8").get(link(token)).status_code == 302


def test_the_token_is_never_logged(patient: Address, caplog: pytest.LogCaptureFixture) -> None:
    token, row = invite(patient)
    Invitation.objects.filter(pk=row.pk).update(revoked_at=timezone.now())
    with caplog.at_level(logging.DEBUG):
        assert Client().get(link(token)).status_code == 404
    assert "Not Found: /mail/invitation/<token>/" in caplog.text
    assert token not in caplog.text
    assert hashlib.sha256(token.encode()).hexdigest() not in caplog.text


# --- Hostile form input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("password", "again", "message"),
    [
        ("p" * 10_000, None, b"at most 256 characters"),
        ("plum tree\x07orchard", None, b"cannot contain control characters"),
        ("plum tree\x00orchard", None, b"Null characters are not allowed"),
        ("plum tree orchard 42", "plum tree orchard 43", b"didn"),
        ("short", None, b"too short"),
        ("password123", None, b"too common"),
        ("", None, b"This field is required"),
    ],
)
def test_hostile_or_weak_passwords_get_a_clear_error_and_keep_the_invitation(
    patient: Address, password: str, again: str | None, message: bytes
) -> None:
    token, row = invite(patient)
    client = Client()
    response = accept(client, token, password, again)
    assert response.status_code == 400
    assert message in response.content
    row.refresh_from_db()
    assert row.accepted_at is None
    assert not get_user_model().objects.filter(username=PATIENT).exists()
    # The same session can still finish.
    assert client.post(SET_UP, {"new_password1": GOOD, "new_password2": GOOD}).status_code == 302


def test_a_password_like_the_address_is_refused(patient: Address) -> None:
    response = accept(Client(), invite(patient)[0], "jane.roe@portal.example")
    assert response.status_code == 400
    assert b"too similar" in response.content


# --- Races ------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_two_acceptances_at_once_one_wins() -> None:
    address = patient_address()
    token, _ = invite(address)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt(password: str) -> None:
        try:
            invitation = invitations.find(token=token)
            request = RequestFactory().post(SET_UP, REMOTE_ADDR="192.0.2.10")
            start.wait(5)
            invitations.accept(invitation=invitation, password=password, request=request)
            outcomes.append(password)
        except invitations.Invalid as failure:
            outcomes.append(failure.reason)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(p,))
               for p in ("first password 1", "second password 2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(outcomes) == 2 and outcomes.count("used-or-revoked-meanwhile") == 1, outcomes
    [winner] = [o for o in outcomes if o != "used-or-revoked-meanwhile"]
    user = get_user_model().objects.get(username=PATIENT)
    assert user.check_password(winner)
    assert AddressGrant.objects.filter(address=address).count() == 1
    assert AuditEvent.objects.filter(action="invitation.accept").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_revocation_racing_an_acceptance_leaves_one_outcome() -> None:
    address = patient_address()
    token, row = invite(address)
    invitation = invitations.find(token=token)
    Invitation.objects.filter(pk=row.pk).update(revoked_at=timezone.now())
    with pytest.raises(invitations.Invalid):
        invitations.accept(invitation=invitation, password=GOOD,
                           request=RequestFactory().post(SET_UP))
    assert not get_user_model().objects.filter(username=PATIENT).exists()
