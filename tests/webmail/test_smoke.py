from __future__ import annotations

from tests.factories import MailboxEntryFactory


def test_it_lists_and_opens_a_message(alice, alice_client):
    entry = MailboxEntryFactory(address=alice.address)
    response = alice_client.get("/mail/", follow=True)
    assert response.status_code == 200
    assert b"Referral" in response.content
    response = alice_client.get(f"/mail/m/{entry.pk}/")
    assert response.status_code == 200
    assert b"Please see the attached." in response.content
