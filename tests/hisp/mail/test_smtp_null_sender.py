"""The null reverse-path ``MAIL FROM:<>`` on backbone ingress (RFC 5321 section 4.5.5).

DSNs, and MDNs per RFC 3798 section 3, arrive with the null sender: they are accepted, stored
with an empty envelope sender, matched to our deliveries by the signed header From, and never
answered (no MDN, DSN or courtesy notice), so two HISPs can never loop.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest

from hisp.models import Delivery, MailboxEntry, Message
from hisp.smtp import server
from hisp.smtp.backbone import reverse_path
from tests.hisp.mail.conftest import HOSTED, _start
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, crlf
from tests.hisp.mail.test_ingress import MESSAGE


def _client(controller) -> smtplib.SMTP:
    client = smtplib.SMTP(controller.hostname, controller.port, timeout=10)
    client.ehlo(PARTNER)
    return client


def _send_null(controller, raw: bytes, rcpt: str) -> int:
    with _client(controller) as client:
        assert client.mail("") == (250, b"2.1.0 OK")
        assert client.rcpt(rcpt)[0] == 250
        code, _ = client.data(raw)
    return code


@pytest.fixture
def live(transactional_db, world) -> Iterator:
    """The world (partner + sink) with our real backbone listener in front of it."""
    yield from _start(server.backbone)


def test_null_reverse_path_is_accepted_and_stored_empty(backbone, bob):
    with _client(backbone) as client:
        client.send(b"MAIL FROM:<>\r\n")
        assert client.getreply() == (250, b"2.1.0 OK")
        assert client.rcpt(bob.address) == (250, b"2.1.5 OK")
        code, _ = client.data(MESSAGE)
    assert code == 250
    stored = Message.objects.get()
    assert stored.envelope_from == ""
    assert stored.envelope_to == [bob.address]
    assert bytes(stored.raw) == MESSAGE


def test_null_reverse_path_takes_esmtp_parameters(backbone, bob):
    with _client(backbone) as client:
        assert client.mail("", ["SIZE=500", "BODY=8BITMIME"])[0] == 250
        assert client.rcpt(bob.address)[0] == 250
        assert client.data(MESSAGE)[0] == 250
    assert Message.objects.get().envelope_from == ""


def test_second_mail_after_null_reverse_path_is_503(backbone, bob):
    with _client(backbone) as client:
        assert client.mail("")[0] == 250
        assert client.mail("doc@partner.example.net")[0] == 503


def test_null_path_as_recipient_is_501(backbone, bob):
    with _client(backbone) as client:
        client.mail("")
        code, reply = client.docmd("RCPT TO:<>")
    assert (code, reply[:5]) == (501, b"5.1.3")


def test_null_reverse_path_is_refused_on_submission(submission, alice):
    """Clients of hosted users always send from an address they own (550 5.7.1)."""
    from tests.hisp.mail.test_submission import PASSWORD
    from tests.hisp.mail.test_submission import _client as submission_client

    with submission_client(submission) as client:
        client.login(alice.address, PASSWORD)
        code, reply = client.mail("")
    assert (code, reply[:5]) == (550, b"5.7.1")


def test_reverse_path_stores_the_null_path_empty():
    assert reverse_path("<>") == ""
    assert reverse_path(None) == ""
    assert reverse_path("doc@partner.example.net") == "doc@partner.example.net"


def _mdn(world, original: Message, disposition: str) -> bytes:
    body = crlf(
        (
            f"From: {world.partner.address}\nTo: {world.alice.address}\n"
            f"Message-ID: <mdn-null-{original.pk}@{PARTNER}>\n"
            "Subject: Processed\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=disposition-notification; boundary="b1"\n'
            "\n--b1\nContent-Type: text/plain\n\nProcessed.\n--b1\n"
            "Content-Type: message/disposition-notification\n\n"
            f"Reporting-UA: {PARTNER}; openssl\nFinal-Recipient: rfc822;{world.partner.address}\n"
            f"Original-Message-ID: {original.message_id}\n"
            f"Disposition: automatic-action/MDN-sent-automatically;{disposition}\n"
            "\n--b1--\n"
        ).encode()
    )
    return world.partner.protect(body, to=world.alice.address)


def _dsn(world, original: Message) -> bytes:
    body = crlf(
        (
            f"From: {world.partner.address}\nTo: {world.alice.address}\n"
            f"Message-ID: <dsn-null-{original.pk}@{PARTNER}>\n"
            "Subject: Delivery failed\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\n'
            "\n--b1\nContent-Type: text/plain\n\nFailed.\n--b1\n"
            "Content-Type: message/delivery-status\n\n"
            f"Reporting-MTA: dns; {PARTNER}\nOriginal-Message-ID: {original.message_id}\n\n"
            f"Final-Recipient: rfc822;{world.partner.address}\nAction: failed\n"
            "Status: 5.1.1\nDiagnostic-Code: smtp; 550 no such mailbox\n"
            "\n--b1--\n"
        ).encode()
    )
    return world.partner.protect(body, to=world.alice.address)


def _sent_to_partner(world) -> Message:
    from hisp.services import compose

    raw = compose.build_message(
        sender=world.alice.address, to=[world.partner.address], subject="Referral",
        body_text="Please see the patient.",
    )
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    drain()
    assert len(world.sink.handler.messages) == 1
    return message


def test_null_sender_mdn_updates_tracking_by_header_from(live, world):
    original = _sent_to_partner(world)
    assert _send_null(live, _mdn(world, original, "processed"), world.alice.address) == 250
    drain()
    delivery = Delivery.objects.get(message=original)
    assert delivery.state == Delivery.State.PROCESSED
    report = Message.objects.get(direction=Message.Direction.INBOUND, kind=Message.Kind.MDN)
    assert report.envelope_from == ""
    assert report.original == original
    # Not inbox mail, and never answered: the sink still holds only the original message.
    assert not MailboxEntry.objects.filter(message=report).exists()
    assert len(world.sink.handler.messages) == 1
    assert not Message.objects.filter(
        direction=Message.Direction.OUTBOUND, kind=Message.Kind.MDN
    ).exists()


def test_null_sender_dsn_fails_the_delivery_and_is_never_answered(live, world):
    original = _sent_to_partner(world)
    assert _send_null(live, _dsn(world, original), world.alice.address) == 250
    drain()
    delivery = Delivery.objects.get(message=original)
    assert (delivery.state, delivery.detail) == (Delivery.State.FAILED, "DSN 5.1.1")
    # One failure notice for alice (filed locally), nothing sent back to the partner.
    assert MailboxEntry.objects.filter(
        address=world.alice, message__kind=Message.Kind.DSN
    ).count() == 1
    incoming = Message.objects.get(direction=Message.Direction.INBOUND, envelope_from="",
                                   kind=Message.Kind.DSN, peer__startswith="127.0.0.1")
    assert not MailboxEntry.objects.filter(message=incoming).exists()
    assert len(world.sink.handler.messages) == 1


def test_unsecured_null_sender_mail_gets_no_courtesy_notice(live, world, settings):
    from django.core.cache import cache

    cache.clear()
    settings.HISP_COURTESY_NOTICES = True
    inner = world.partner.inner(to=world.alice.address, message_id=f"<u1@{PARTNER}>")
    raw = world.partner.protect(inner, to=world.alice.address, encrypt=False)
    assert _send_null(live, raw, world.alice.address) == 250
    drain()
    message = Message.objects.get(direction=Message.Direction.INBOUND)
    assert (message.state, message.reason) == (Message.State.REJECTED, "not-encrypted")
    assert not Message.objects.filter(kind=Message.Kind.NOTICE).exists()
    assert world.sink.handler.messages == []


def test_null_sender_message_is_delivered_without_any_mdn(live, world):
    inner = world.partner.inner(to=world.alice.address, message_id=f"<n1@{PARTNER}>")
    raw = world.partner.protect(inner, to=world.alice.address)
    assert _send_null(live, raw, f"alice@{HOSTED.upper()}") == 250
    drain()
    message = Message.objects.get(direction=Message.Direction.INBOUND)
    assert message.state == Message.State.DELIVERED
    assert MailboxEntry.objects.filter(address=world.alice, message=message).exists()
    assert not Message.objects.filter(kind=Message.Kind.MDN).exists()
    assert world.sink.handler.messages == []
