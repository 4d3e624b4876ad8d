"""The message page of mail whose header fields Python's email package cannot parse (see
tests/hisp/mail/test_hostile_headers.py): it answered 500."""

from __future__ import annotations

import pytest

from tests.factories import MailboxEntryFactory, MessageFactory
from tests.hisp.mail.test_hostile_headers import HOSTILE, _message


@pytest.mark.parametrize(("name", "value"), HOSTILE + [("From", '"'), ("To", "User1@")])
def test_the_webmail_page_of_such_a_message_opens(alice, alice_client, name, value):
    entry = MailboxEntryFactory(
        address=alice.address, message=MessageFactory(content=_message(name, value, multipart=True))
    )
    response = alice_client.get(f"/mail/m/{entry.pk}/")
    assert response.status_code == 200
    assert b"Potassium 4.1" in response.content
    assert alice_client.get(f"/mail/m/{entry.pk}/attachments/1/").status_code == 200


def test_a_charset_with_a_nul_is_read_as_utf_8(alice, alice_client):
    raw = (b"From: dr.who@partner.example\r\nSubject: s\r\n"
           b"Content-Type: text/plain; charset=\"utf\x00-8\"\r\n\r\ncaf\xc3\xa9\r\n")
    entry = MailboxEntryFactory(address=alice.address, message=MessageFactory(content=raw))
    response = alice_client.get(f"/mail/m/{entry.pk}/")
    assert response.status_code == 200
    assert "café" in response.content.decode()
