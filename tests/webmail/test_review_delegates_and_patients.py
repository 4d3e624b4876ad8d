"""Delegates of a practice inbox (read-only, read-and-send, revoked while a page is open) and
patients on portal addresses: what each may see and do."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import Address, AddressGrant, AuditEvent, Domain
from tests.factories import AddressFactory, AddressGrantFactory, DomainFactory, UserFactory
from tests.webmail.personas import Persona, signed_in
from webmail.models import Draft


def _send(client, sender, **fields):
    data = {"sender": sender.pk, "to": "dana@partner.example", "cc": "", "subject": "Referral",
            "body": "Please see.", "delivery_notification": "on"}
    data.update(fields)
    return client.post("/mail/compose/", data)


def _patient() -> Persona:
    portal = DomainFactory(name="portal.example", kind=Domain.Kind.PATIENT_PORTAL)
    address = AddressFactory(address="jane.roe@portal.example", domain=portal,
                             kind=Address.Kind.PATIENT, display_name="Jane Roe")
    user = UserFactory(username="jane.roe@portal.example")
    AddressGrantFactory(user=user, address=address)
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    return Persona(user=user, address=address, device=device)


# --- A delegate's sent message, seen by the owner -----------------------------------------------
def test_the_owner_sees_which_delegate_sent_a_message_from_their_mailbox(alice, bob):
    AddressGrantFactory(user=bob.user, address=alice.address, role=AddressGrant.Role.READ_SEND)
    sent = _send(signed_in(bob), alice.address)
    assert sent.status_code == 302
    page = signed_in(alice).get(sent["Location"])
    assert page.status_code == 200
    assert page.context["sent_by"] == "bob"
    assert 'id="sent-by"' in page.content.decode()
    assert "on behalf of alice@clinic.example" in page.content.decode()


def test_the_owners_own_sent_message_names_no_one_else(alice, alice_client):
    sent = _send(alice_client, alice.address)
    page = alice_client.get(sent["Location"])
    assert page.context["sent_by"] == ""
    assert 'id="sent-by"' not in page.content.decode()


def test_a_delegates_send_is_audited_as_the_delegate(alice, bob):
    AddressGrantFactory(user=bob.user, address=alice.address, role=AddressGrant.Role.READ_SEND)
    _send(signed_in(bob), alice.address)
    event = AuditEvent.objects.get(action="message.submitted")
    assert event.actor == bob.user and event.detail["sender"] == "alice@clinic.example"


# --- Revoked or downgraded while a compose page is open ---------------------------------------
def test_autosave_after_the_delegation_is_revoked_says_the_draft_was_not_saved(alice, bob):
    grant = AddressGrantFactory(user=bob.user, address=alice.address,
                                role=AddressGrant.Role.READ_SEND)
    client = signed_in(bob)
    first = client.post("/mail/compose/draft/", {"sender": alice.address.pk, "body": "a"})
    assert first.status_code == 200
    grant.delete()
    response = client.post("/mail/compose/draft/", {
        "sender": alice.address.pk, "body": "more", "draft": Draft.objects.get().pk})
    assert response.status_code == 404
    # The status line itself, not a whole error page dropped into it.
    assert "Draft not saved" in response.content.decode()
    assert "<html" not in response.content.decode()
    assert Draft.objects.get().body == "a"


def test_autosave_after_the_delegation_is_made_read_only_says_so(alice, bob):
    grant = AddressGrantFactory(user=bob.user, address=alice.address,
                                role=AddressGrant.Role.READ_SEND)
    client = signed_in(bob)
    AddressGrant.objects.filter(pk=grant.pk).update(role=AddressGrant.Role.READ)
    response = client.post("/mail/compose/draft/", {"sender": alice.address.pk, "body": "x"})
    assert response.status_code == 403
    assert "Draft not saved" in response.content.decode()
    assert not Draft.objects.exists()


# --- Patients -----------------------------------------------------------------------------------
def test_a_patient_cannot_share_their_mailbox(db):
    jane = _patient()
    colleague = UserFactory(username="dr.house")
    client = signed_in(jane)
    url = f"/mail/a/{jane.address.pk}/sharing/"
    response = client.post(url, {"username": "dr.house", "role": AddressGrant.Role.READ_SEND})
    assert response.status_code == 302 and response["Location"] == "/mail/account/"
    assert not AddressGrant.objects.filter(user=colleague).exists()
    # Nor may they learn which user names exist by trying them.
    probe = client.post(url, {"username": "no-such-user", "role": AddressGrant.Role.READ},
                        follow=True)
    assert "No active user" not in probe.content.decode()
    assert "cannot be shared" in probe.content.decode()


def test_a_patient_is_not_offered_sharing(db):
    jane = _patient()
    client = signed_in(jane)
    settings_page = client.get("/mail/account/").content.decode()
    folders_page = client.get(f"/mail/a/{jane.address.pk}/folders/").content.decode()
    sharing = f"/mail/a/{jane.address.pk}/sharing/"
    assert sharing not in settings_page and sharing not in folders_page


def test_a_clinician_is_still_offered_sharing(alice, alice_client):
    sharing = f"/mail/a/{alice.address.pk}/sharing/"
    assert sharing in alice_client.get("/mail/account/").content.decode()


def test_a_practice_mailbox_cannot_be_shared_with_a_patients_account(alice, alice_client):
    jane = _patient()
    response = alice_client.post(f"/mail/a/{alice.address.pk}/sharing/", {
        "username": "jane.roe@portal.example", "role": AddressGrant.Role.READ})
    assert response.status_code == 200
    # Refused as a name that does not exist: otherwise any practice user could test whether
    # an e-mail address is a patient's here.
    nobody = alice_client.post(f"/mail/a/{alice.address.pk}/sharing/", {
        "username": "no.one@portal.example", "role": AddressGrant.Role.READ})
    assert response.context["form"].errors == nobody.context["form"].errors
    assert not AddressGrant.objects.filter(user=jane.user, address=alice.address).exists()


def test_staff_cannot_share_a_practice_mailbox_with_a_patient_nor_a_patients_mailbox(
    alice, bob
):
    from adminconsole.services import StaffActionError, grant_access

    jane = _patient()
    request = RequestFactory().post("/console/")
    request.user = bob.user
    with pytest.raises(StaffActionError, match="not shared with patients"):
        grant_access(request=request, address=alice.address, user=jane.user,
                     role=AddressGrant.Role.READ)
    with pytest.raises(StaffActionError, match="patient's mailbox is not shared"):
        grant_access(request=request, address=jane.address, user=bob.user,
                     role=AddressGrant.Role.READ)
    assert not AddressGrant.objects.filter(address=alice.address, user=jane.user).exists()
    assert not AddressGrant.objects.filter(address=jane.address, user=bob.user).exists()


def test_a_clinician_can_still_share_with_a_colleague(alice, bob, alice_client):
    response = alice_client.post(f"/mail/a/{alice.address.pk}/sharing/", {
        "username": "bob", "role": AddressGrant.Role.READ})
    assert response.status_code == 302
    assert AddressGrant.objects.filter(user=bob.user, address=alice.address,
                                       role=AddressGrant.Role.READ).exists()
