"""Header fields that Python's email package cannot parse: its header parser fails on some of
them with IndexError or AttributeError (``To: User1@``, ``Message-ID: <``, ``From: "``, a
group whose display name runs into an addr-spec). A trusted partner's message with one such
field passed the agent (which reads only From and the MIME structure), then failed on every
attempt to file it and was rejected: lost to its recipient. The webmail page showing it
answered 500. The fields were found by fuzzing the summariser with mutated vector messages."""

from __future__ import annotations

import pytest

from hisp import mailtext
from hisp.models import Delivery, MailboxEntry, Message
from hisp.services import mail
from tests.hisp.mail.drive import drain

HOSTILE = [
    ("Cc", "User1@"),
    ("Cc", "<"),
    ("Message-ID", "<"),
    ("Subject", "x\r\n =?utf-8?q?=00?= \"<"),
    ("Reply-To", "externContent-Disposition: attachment; filename=User1@x.com"),
]


def _message(name: str, value: str, *, multipart: bool = False) -> bytes:
    head = "From: Dr Who <dr.who@partner.example>\r\nTo: alice@clinic.example\r\n"
    if name != "Message-ID":
        head += "Message-ID: <h1@partner.example>\r\n"
    head += f"{name}: {value}\r\nSubject: Labs\r\n" if name != "Subject" else f"{name}: {value}\r\n"
    if not multipart:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\nPotassium 4.1\r\n").encode()
    return (
        head + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPotassium 4.1\r\n"
        '--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="r.pdf"'
        "\r\n\r\n%PDF-1.4\r\n--b--\r\n"
    ).encode()


@pytest.mark.parametrize(("name", "value"), HOSTILE)
@pytest.mark.parametrize("multipart", [False, True])
def test_the_summary_of_an_unparseable_field_is_its_text(name, value, multipart):
    summary = mailtext.summarise(_message(name, value, multipart=multipart))
    assert "Potassium 4.1" in summary.body_text
    assert summary.sender_address == "dr.who@partner.example"
    if name == "Cc":
        assert summary.cc == (value,)
    if name == "Message-ID":
        assert summary.message_id == "<"
    if multipart:
        assert [a.filename for a in summary.attachments] == ["r.pdf"]


@pytest.mark.parametrize(("name", "value"), [h for h in HOSTILE if h[0] in ("From", "Cc")] + [
    ("From", '"'), ("To", "User1@"),
])
def test_an_unparseable_sender_or_recipient_field_is_shown_as_written(name, value):
    raw = (f"{name}: {value}\r\nSubject: s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           "hello\r\n").encode()
    summary = mailtext.summarise(raw)
    assert summary.body_text.strip() == "hello"
    if name == "From":
        assert summary.sender == value
    else:
        assert value in (*summary.to, *summary.cc)


def test_a_partners_message_with_an_unparseable_field_is_delivered(world):
    partner = world.partner
    inner = partner.inner(
        to=world.alice.address, message_id="<h2@partner.example.net>", extra="Cc: User1@\n"
    )
    message = mail.accept_incoming(
        raw=partner.protect(inner, to=world.alice.address), mail_from=partner.address,
        rcpt_tos=[world.alice.address], peer="127.0.0.1:2525",
    )
    drain()
    message.refresh_from_db()
    assert (message.state, message.reason) == (Message.State.DELIVERED, "")
    entry = MailboxEntry.objects.get(address=world.alice, message=message)
    assert "Patient summary" in entry.body_text
    assert Delivery.objects.get(message=message).state == Delivery.State.DELIVERED
    assert len(world.sink.handler.messages) == 1  # its processed MDN


def test_a_body_the_email_package_fails_on_is_filed_without_its_text(world, monkeypatch):
    """Fuzzing found no such body today, but the email package has failed on hostile MIME in
    ways it does not document (above): a monkeypatched body reader stands in for the next one.
    The message is filed with its header fields rather than rejected after five attempts."""

    def fails(message):
        raise AttributeError("'NoneType' object has no attribute 'get_content'")

    monkeypatch.setattr(mailtext, "body_text", fails)
    raw = _message("Cc", "nurse@partner.example", multipart=True)
    summary = mailtext.summarise(raw)
    assert (summary.subject, summary.body_text, summary.cc) == (
        "Labs", "", ("nurse@partner.example",)
    )
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<h3@partner.example.net>")
    inner = inner.replace(b"Content-Type: text/plain", b'Content-Type: multipart/mixed; boundary="b"')
    inner = inner.replace(b"\r\n\r\nPatient summary attached.\r\n",
                          b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nPatient summary\r\n--b--\r\n")
    message = mail.accept_incoming(
        raw=partner.protect(inner, to=world.alice.address), mail_from=partner.address,
        rcpt_tos=[world.alice.address], peer="127.0.0.1:2525",
    )
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.DELIVERED
    entry = MailboxEntry.objects.get(address=world.alice, message=message)
    assert (entry.subject, entry.body_text) == ("Referral", "")


def _nested(levels: int) -> str:
    return "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(levels)
    ) + "Content-Type: text/plain\r\n\r\nPatient summary\r\n"


def test_a_message_nested_past_the_parsers_recursion_is_filed_by_its_fields(world):
    """The email package's parser recurses once per nesting level: 1,500 levels (about 70 KB)
    raised RecursionError on every attempt, so the message was rejected, lost to alice."""
    raw = ("From: dr.who@partner.example\r\nSubject: Deep\r\nMIME-Version: 1.0\r\n"
           + _nested(1500)).encode()
    summary = mailtext.summarise(raw)
    assert (summary.subject, summary.sender_address, summary.body_text) == (
        "Deep", "dr.who@partner.example", ""
    )
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<h4@partner.example.net>")
    head = inner.split(b"Content-Type: text/plain\r\n\r\n")[0]
    message = mail.accept_incoming(
        raw=partner.protect(head + _nested(1500).encode(), to=world.alice.address),
        mail_from=partner.address, rcpt_tos=[world.alice.address], peer="127.0.0.1:2525",
    )
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.DELIVERED
    entry = MailboxEntry.objects.get(address=world.alice, message=message)
    assert entry.subject == "Referral"
