from __future__ import annotations

from datetime import timedelta

from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from hisp.models import AddressGrant, AuditEvent, MailboxEntry
from tests.factories import MailboxEntryFactory
from tests.webmail.personas import signed_in
from webmail.models import Contact, NotificationPreference
from webmail.services import send_waiting_notices


def test_it_saves_and_removes_contacts(alice, alice_client):
    alice_client.post("/mail/account/contacts/", {"name": "Dana", "address": "Dana@Partner.example"})
    contact = Contact.objects.get(owner=alice.user)
    assert contact.address == "dana@partner.example"
    assert b"Dana" in alice_client.get("/mail/account/contacts/").content
    alice_client.post(f"/mail/account/contacts/{contact.pk}/delete/")
    assert not Contact.objects.exists()


def test_outsider_gets_404_for_another_users_contact(alice, charlie_client):
    contact = Contact.objects.create(owner=alice.user, address="dana@partner.example")
    assert charlie_client.post(f"/mail/account/contacts/{contact.pk}/delete/").status_code == 404
    assert Contact.objects.filter(pk=contact.pk).exists()
    assert b"dana@partner.example" not in charlie_client.get("/mail/account/contacts/").content


def test_an_owner_delegates_read_only_access_and_revokes_it(alice, bob, alice_client):
    response = alice_client.post(f"/mail/a/{alice.address.pk}/sharing/",
                                 {"username": "bob", "role": "read"})
    assert response.status_code == 302
    grant = AddressGrant.objects.get(user=bob.user, address=alice.address)
    assert grant.role == AddressGrant.Role.READ and not grant.may_send
    entry = MailboxEntryFactory(address=alice.address)
    bob_client = signed_in(bob)
    assert bob_client.get(f"/mail/m/{entry.pk}/").status_code == 200
    assert AuditEvent.objects.filter(action="mailbox.delegate").exists()
    alice_client.post(f"/mail/sharing/{grant.pk}/revoke/")
    assert not AddressGrant.objects.filter(pk=grant.pk).exists()
    assert bob_client.get(f"/mail/m/{entry.pk}/").status_code == 404


def test_a_delegate_cannot_manage_sharing(alice, bob):
    AddressGrant.objects.create(user=bob.user, address=alice.address, role=AddressGrant.Role.READ_SEND)
    response = signed_in(bob).post(f"/mail/a/{alice.address.pk}/sharing/",
                                   {"username": "bob", "role": "read_send"})
    assert response.status_code == 403


def test_outsider_gets_404_for_another_mailboxs_sharing(alice, bob, charlie_client):
    grant = AddressGrant.objects.create(user=bob.user, address=alice.address, role="read")
    assert charlie_client.get(f"/mail/a/{alice.address.pk}/sharing/").status_code == 404
    assert charlie_client.post(f"/mail/sharing/{grant.pk}/revoke/").status_code == 404
    assert AddressGrant.objects.filter(pk=grant.pk).exists()


def test_an_owners_own_grant_cannot_be_revoked_as_a_delegation(alice, alice_client):
    own = AddressGrant.objects.get(user=alice.user, address=alice.address)
    assert alice_client.post(f"/mail/sharing/{own.pk}/revoke/").status_code == 404


def test_it_refuses_delegating_to_an_unknown_user(alice, alice_client):
    response = alice_client.post(f"/mail/a/{alice.address.pk}/sharing/",
                                 {"username": "nobody", "role": "read"})
    assert response.status_code == 200
    assert AddressGrant.objects.count() == 1


def test_it_saves_the_notification_preference(alice, alice_client):
    alice_client.post("/mail/account/", {"enabled": "on"})
    assert NotificationPreference.objects.get(user=alice.user).enabled


def test_it_sends_one_notice_without_phi_per_interval(alice, settings):
    NotificationPreference.objects.create(user=alice.user, enabled=True)
    MailboxEntryFactory(address=alice.address, subject="Isabella Jones biopsy",
                        sender="dr.who@partner.example")
    assert send_waiting_notices() == 1
    [notice] = mail.outbox
    assert notice.to == [alice.user.email]
    text = notice.subject + notice.body
    assert "Isabella" not in text and "biopsy" not in text and "dr.who" not in text
    MailboxEntryFactory(address=alice.address)
    assert send_waiting_notices() == 0  # within the interval
    later = timezone.now() + settings.HISP_NOTIFY_INTERVAL + timedelta(seconds=1)
    MailboxEntryFactory(address=alice.address, received_at=later)
    assert send_waiting_notices(now=later + timedelta(seconds=1)) == 1
    assert len(mail.outbox) == 2


def test_it_sends_no_notice_when_nothing_new_is_unread(alice):
    NotificationPreference.objects.create(user=alice.user, enabled=True)
    MailboxEntryFactory(address=alice.address, read=True)
    assert send_waiting_notices() == 0


def test_it_sends_no_notice_to_users_who_did_not_opt_in(alice):
    MailboxEntryFactory(address=alice.address)
    assert send_waiting_notices() == 0
    assert mail.outbox == []


def test_the_purge_command_removes_only_expired_trash(alice, settings):
    old = MailboxEntryFactory(address=alice.address, folder=MailboxEntry.SystemFolder.TRASH,
                              trashed_at=timezone.now() - settings.HISP_TRASH_RETENTION - timedelta(days=1))
    fresh = MailboxEntryFactory(address=alice.address, folder=MailboxEntry.SystemFolder.TRASH,
                                trashed_at=timezone.now())
    call_command("webmail_purge")
    assert not MailboxEntry.objects.filter(pk=old.pk).exists()
    assert MailboxEntry.objects.filter(pk=fresh.pk).exists()


def test_a_read_only_delegate_reads_without_changing_the_mailbox(alice, bob):
    AddressGrant.objects.create(user=bob.user, address=alice.address, role=AddressGrant.Role.READ)
    entry = MailboxEntryFactory(address=alice.address)
    bob_client = signed_in(bob)
    page = bob_client.get(f"/mail/m/{entry.pk}/")
    assert page.status_code == 200 and b"read-only access" in page.content
    entry.refresh_from_db()
    assert not entry.read  # the owner still sees it as new
    assert AuditEvent.objects.filter(action="message.open", actor=bob.user).exists()
    assert bob_client.post(f"/mail/m/{entry.pk}/action/", {"action": "delete"}).status_code == 403
    assert bob_client.post(f"/mail/a/{alice.address.pk}/bulk/",
                           {"entry": [entry.pk], "action": "archive"}).status_code == 403
    assert bob_client.post(f"/mail/a/{alice.address.pk}/folders/", {"name": "X"}).status_code == 403
    entry.refresh_from_db()
    assert entry.folder == MailboxEntry.SystemFolder.INBOX


def test_a_read_and_send_delegate_files_messages(alice, bob):
    AddressGrant.objects.create(user=bob.user, address=alice.address,
                                role=AddressGrant.Role.READ_SEND)
    entry = MailboxEntryFactory(address=alice.address)
    signed_in(bob).post(f"/mail/m/{entry.pk}/action/", {"action": "archive"})
    entry.refresh_from_db()
    assert entry.folder == MailboxEntry.SystemFolder.ARCHIVE
