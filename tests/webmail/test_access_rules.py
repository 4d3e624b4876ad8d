"""Two access rules no other test pinned down (each survived having its filter removed): a
suspended mailbox's messages cannot be opened by their address, and a delegate who shares a
mailbox still cannot open its owner's drafts."""

from __future__ import annotations

import pytest

from hisp.models import Address, AddressGrant, AuditEvent
from tests.factories import MailboxEntryFactory
from tests.webmail.personas import signed_in
from webmail.models import Draft


@pytest.mark.parametrize("status", [Address.Status.SUSPENDED, Address.Status.DISABLED])
def test_a_message_of_a_suspended_mailbox_cannot_be_opened(alice, alice_client, status) -> None:
    entry = MailboxEntryFactory(address=alice.address)
    assert alice_client.get(f"/mail/m/{entry.pk}/").status_code == 200
    Address.objects.filter(pk=alice.address.pk).update(status=status)
    opened = AuditEvent.objects.filter(action="message.open").count()
    assert alice_client.get(f"/mail/m/{entry.pk}/").status_code == 404
    assert alice_client.post(f"/mail/m/{entry.pk}/action/", {"action": "delete"}).status_code == 404
    assert alice_client.get(f"/mail/m/{entry.pk}/text/").status_code == 404
    assert AuditEvent.objects.filter(action="message.open").count() == opened


def test_a_delegate_cannot_open_the_owners_draft(alice, bob) -> None:
    AddressGrant.objects.create(user=bob.user, address=alice.address,
                                role=AddressGrant.Role.READ_SEND)
    draft = Draft.objects.create(author=alice.user, address=alice.address, subject="private")
    bob_client = signed_in(bob)
    response = bob_client.get(f"/mail/compose/?draft={draft.pk}")
    assert response.status_code == 404
    assert b"private" not in response.content
