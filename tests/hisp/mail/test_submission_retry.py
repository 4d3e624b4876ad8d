"""A mail client that never got its reply to DATA sends the same message again: it was queued
the first time, so the retry is answered as stored and nothing goes out twice; another message
under a Message-ID already sent is still refused."""

from __future__ import annotations

from hisp.models import Delivery, Message
from tests.hisp.mail.test_submission import _client

PASSWORD = "correct horse battery"
CAROL = "carol@partner.example.net"
DAN = "dan@partner.example.net"


def _raw(sender: str, *, body: str = "Hello Carol", date: bool = True) -> bytes:
    dated = "Date: Tue, 24 Nov 2026 09:00:00 +0000\r\n" if date else ""
    return (
        f"From: Alice <{sender}>\r\nTo: {CAROL}\r\nMessage-ID: <visit-42@laptop>\r\n{dated}"
        f"Subject: results\r\n\r\n{body}\r\n"
    ).encode()


def _send(submission, alice, raw: bytes, rcpts=(CAROL,)) -> tuple[int, bytes]:
    with _client(submission) as client:
        client.login(alice.address, PASSWORD)
        client.mail(alice.address)
        for rcpt in rcpts:
            client.rcpt(rcpt)
        return client.data(raw)


def test_the_same_message_sent_again_is_answered_as_stored_and_sent_once(submission, alice):
    first = _send(submission, alice, _raw(alice.address))
    again = _send(submission, alice, _raw(alice.address))
    assert first[0] == again[0] == 250, (first, again)
    message = Message.objects.get()
    assert again[1].endswith(f"queued as {message.pk}".encode())
    assert Delivery.objects.filter(message=message).count() == 1


def test_a_retry_without_a_date_matches_the_copy_we_dated(submission, alice):
    assert _send(submission, alice, _raw(alice.address, date=False))[0] == 250
    # The first try was dated by us a while ago; the retry gets a new Date of its own.
    stored = Message.objects.get()
    Message.objects.filter(pk=stored.pk).update(
        raw=b"Date: Mon, 23 Nov 2026 08:00:00 +0000\r\n" + bytes(stored.raw).partition(b"\r\n")[2])
    assert _send(submission, alice, _raw(alice.address, date=False))[0] == 250
    assert Message.objects.count() == 1


def test_another_message_under_a_message_id_already_sent_is_refused(submission, alice):
    assert _send(submission, alice, _raw(alice.address))[0] == 250
    code, reply = _send(submission, alice, _raw(alice.address, body="Something else"))
    assert code == 550 and b"was already sent" in reply
    code, reply = _send(submission, alice, _raw(alice.address), rcpts=(CAROL, DAN))
    assert code == 550 and b"was already sent" in reply
    assert Message.objects.count() == 1
