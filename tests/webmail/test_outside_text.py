"""Webmail pages fed with text from outside (query words, received mail): control characters
must neither reach the database (PostgreSQL refuses a NUL, even in a query and in jsonb) nor
turn into a 500, a forged response header or a form the user cannot send."""

from __future__ import annotations

import pytest

from hisp.models import AuditEvent, MailboxEntry, Message
from tests.factories import MailboxEntryFactory, MessageFactory


def test_a_search_with_a_nul_is_run_and_audited(alice, alice_client):
    """The words went into the full-text query and the audit event as typed: a NUL (%00 in
    the address bar) made both fail, a 500."""
    hit = MailboxEntryFactory(address=alice.address, body_text="Potassium level elevated")
    response = alice_client.get(f"/mail/a/{alice.address.pk}/search/",
                                {"q": "potassium\x00 level\x1b"})
    assert response.status_code == 200
    assert [e.pk for e in response.context["entries"]] == [hit.pk]
    event = AuditEvent.objects.get(action="mailbox.search")
    assert event.detail["query"] == "potassium\ufffd level\ufffd"


def test_recipient_suggestions_with_a_nul_answer_without_error(alice, alice_client):
    MailboxEntryFactory(address=alice.address, sender="Dr Quinn <quinn@medicine.example>")
    response = alice_client.get("/mail/compose/recipients/", {"field": "to", "to": "qu\x00in"})
    assert response.status_code == 200
    assert b"quinn@medicine.example" not in response.content


def _raw_with_controls() -> bytes:
    return (
        b"From: Dr\x00 Who <dr.who@partner.example>\r\nTo: alice@clinic.example\r\n"
        b"Subject: Labs\x00 today\r\nMessage-ID: <c1@partner.example>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Potassium\x00 4.1\x1b[2J\r\nsecond line\r\n"
    )


@pytest.mark.parametrize("mode", ["reply", "forward"])
def test_a_reply_to_mail_with_control_characters_can_be_sent(alice, alice_client, mode):
    """The quote and the subject came from the received message as it was: with a NUL in them
    the compose form (which refuses NUL) rejected the user's own reply."""
    message = MessageFactory(content=_raw_with_controls())
    entry = MailboxEntryFactory(address=alice.address, message=message, subject="")
    form = alice_client.get(f"/mail/compose/?reply={entry.pk}&mode={mode}").context["form"]
    assert "\x00" not in form.initial["body"] and "\x1b" not in form.initial["body"]
    assert "Potassium\ufffd 4.1" in form.initial["body"]
    assert "\x00" not in form.initial["subject"]
    if mode == "reply":
        assert form.initial["to"] == "dr.who@partner.example"
    response = alice_client.post("/mail/compose/", {
        "sender": alice.address.pk, "to": "dr.who@partner.example",
        "subject": form.initial["subject"], "body": form.initial["body"],
        "forward_of": form.initial.get("forward_of") or "", "phi_confirmed": "on",
    })
    assert response.status_code == 302, response.context["form"].errors
    assert Message.objects.filter(direction=Message.Direction.OUTBOUND).count() == 1


def test_a_message_with_control_characters_is_shown(alice, alice_client):
    entry = MailboxEntryFactory(address=alice.address,
                                message=MessageFactory(content=_raw_with_controls()))
    response = alice_client.get(f"/mail/m/{entry.pk}/")
    assert response.status_code == 200
    opened = response.context["opened"]
    assert opened.headers["From"] == "Dr\ufffd Who <dr.who@partner.example>"
    assert "\x00" not in response.content.decode() and "\x1b" not in response.content.decode()


@pytest.mark.parametrize(("disposition", "expected"), [
    # RFC 2231: the encoded form can carry anything, line ends and NUL included.
    (b"attachment; filename*=utf-8''lab%0D%0ASet-Cookie%3A%20x%00.pdf", "lab_Set-Cookie_ x_.pdf"),
    (b"attachment; filename*=utf-8''%E6%8A%A5%E5%91%8A.pdf", "\u62a5\u544a.pdf"),
    (b'attachment; filename="=?utf-8?q?a=0Db=0Ac=00d.pdf?="', "a_b_c_d.pdf"),
    (b'attachment; filename="r\\"e\\\\port.pdf"', "port.pdf"),  # a backslash is a path
])
def test_an_attachment_name_never_breaks_or_forges_the_download_header(
    alice, alice_client, disposition, expected
):
    raw = (
        b"From: dr.who@partner.example\r\nTo: alice@clinic.example\r\nSubject: Labs\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: " + disposition
        + b"\r\n\r\n%PDF-1.4\r\n--b--\r\n"
    )
    entry = MailboxEntryFactory(address=alice.address, message=MessageFactory(content=raw))
    [attachment] = alice_client.get(f"/mail/m/{entry.pk}/").context["opened"].attachments
    assert attachment.filename == expected
    response = alice_client.get(f"/mail/m/{entry.pk}/attachments/{attachment.index}/")
    assert response.status_code == 200
    header = response["Content-Disposition"]
    assert header.startswith("attachment;")
    assert not any(ch in header for ch in "\r\n\x00")
    header.encode("latin-1")  # what HTTP/1.1 can carry
    assert MailboxEntry.objects.get(pk=entry.pk).read
