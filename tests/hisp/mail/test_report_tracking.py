"""Delivery tracking fed with reports as other implementations write them (the Java reference
implementation's vectors, RFC 3464 DSNs without the reference implementations' extension
field, Message-IDs quoted in other spellings), and the DSNs we file for the sender."""

from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from hisp import dsn
from hisp.models import Delivery, MailboxEntry, Message, Route
from hisp.reports import field_blocks
from hisp.services import compose, mail, outbound, tracking
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, crlf
from tests.hisp.mail.test_reports import _vector


def _send(world, *, timely: bool = False) -> Message:
    raw = compose.build_message(
        sender=world.alice.address,
        to=[world.partner.address],
        subject="Referral",
        body_text="Please see the patient.",
        delivery_notification=timely,
    )
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    drain()
    return message


def _from_partner(world, report: bytes) -> Message:
    """``report`` signed by the partner and encrypted to alice, through our inbound path."""
    mail.accept_incoming(
        raw=world.partner.protect(crlf(report), to=world.alice.address),
        mail_from="",
        rcpt_tos=[world.alice.address],
        peer="partner",
    )
    drain()
    return Message.objects.filter(direction=Message.Direction.INBOUND, peer="partner").latest("id")


def _mdn(world, original_id: str, disposition: str) -> bytes:
    return (
        f"From: {world.partner.address}\nTo: {world.alice.address}\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="b1"\n'
        "\n--b1\nContent-Type: text/plain\n\nA report.\n--b1\n"
        "Content-Type: message/disposition-notification\n\n"
        f"Reporting-UA: {PARTNER}; test\nFinal-Recipient: rfc822;{world.partner.address}\n"
        f"Original-Message-ID: {original_id}\n"
        f"Disposition: automatic-action/MDN-sent-automatically;{disposition}\n\n--b1--\n"
    ).encode()


def _state(world, message: Message) -> str:
    return Delivery.objects.get(message=message, recipient=world.partner.address).state


def _alice_dsns(world) -> list[bytes]:
    entries = MailboxEntry.objects.filter(address=world.alice, message__kind=Message.Kind.DSN)
    return [bytes(e.message.raw) for e in entries.order_by("id")]


@pytest.mark.parametrize(
    "spelling",
    [
        lambda mid: mid.strip("<>"),
        lambda mid: f'"{mid}"',
        lambda mid: f"{mid} (your referral)",
        lambda mid: f"<  {mid.strip('<>')}  >",
    ],
    ids=["without-angle-brackets", "in-double-quotes", "with-a-comment", "spaces-inside"],
)
def test_an_mdn_quoting_our_message_id_in_another_spelling_is_matched(world, spelling):
    message = _send(world)
    report = _from_partner(world, _mdn(world, spelling(message.message_id), "processed"))
    assert (report.kind, report.reason) == (Message.Kind.MDN, "")
    assert _state(world, message) == Delivery.State.PROCESSED


def test_an_mdn_about_another_message_matches_nothing(world):
    message = _send(world)
    other = message.message_id.replace("@", "x@")
    report = _from_partner(world, _mdn(world, f'"{other.strip("<>")}"', "failed"))
    assert report.reason == "report-unmatched"
    assert _state(world, message) == Delivery.State.SENT
    assert _alice_dsns(world) == []


@pytest.mark.parametrize("disposition", ["deleted", "denied"])
def test_an_mdn_saying_the_recipient_deleted_the_message_is_no_failure(world, disposition):
    """RFC 3798 3.2.6.2: the message reached the recipient; the sender must not be told that
    it could not be delivered."""
    message = _send(world)
    _from_partner(world, _mdn(world, message.message_id, "processed"))
    report = _from_partner(world, _mdn(world, message.message_id, disposition))
    assert (report.kind, report.reason) == (Message.Kind.MDN, "")
    assert _state(world, message) == Delivery.State.PROCESSED
    assert _alice_dsns(world) == []


@pytest.mark.parametrize("disposition", ["deleted", "denied", "displayed"])
def test_an_mdn_of_a_later_disposition_alone_confirms_the_delivery(world, disposition):
    """No processed MDN came first (a partner that sends only the later one): the message
    reached the recipient all the same, and the MDN timeout must not call it failed."""
    message = _send(world)
    _from_partner(world, _mdn(world, message.message_id, disposition))
    assert _state(world, message) == Delivery.State.PROCESSED
    assert tracking.expire_overdue(now=timezone.now() + timedelta(days=30)) == 0
    assert _alice_dsns(world) == []


def _java(world, name: str, message: Message) -> bytes:
    """A Java reference implementation vector, about our message and between our two users."""
    return (
        _vector(name)
        .replace(b"<9501051053.aa04167@IETF.CNR I.Reston.VA.US>", message.message_id.encode())
        .replace(b"externUser1@starugh-stateline.com", world.partner.address.encode())
        .replace(b"Carol@Ivory.EDU", world.partner.address.encode())
        .replace(b"User1@Cerner.com", world.alice.address.encode())
    )


def test_the_java_reference_mdns_confirm_timely_delivery(world):
    """Its processed MDN, then its dispatched MDN with X-DIRECT-FINAL-DESTINATION-DELIVERY (no
    ``rfc822;`` type, no closing boundary, bare LF line ends in the files)."""
    message = _send(world, timely=True)
    _from_partner(world, _java(world, "MDNMessage.txt", message))
    assert _state(world, message) == Delivery.State.PROCESSED
    _from_partner(world, _java(world, "MDNDispatchedMessage.txt", message))
    assert _state(world, message) == Delivery.State.DISPATCHED
    [notice] = _alice_dsns(world)
    assert dsn.parse(notice).recipients[0].action == "delivered"


def test_the_java_reference_dsn_fails_the_delivery_with_its_diagnostic(world):
    message = _send(world)
    report = _from_partner(world, _java(world, "DSNMessage.txt", message))
    assert (report.kind, report.reason) == (Message.Kind.DSN, "")
    assert _state(world, message) == Delivery.State.FAILED
    [notice] = _alice_dsns(world)
    [recipient] = dsn.parse(notice).recipients
    # The remote's own code and type are passed on (RFC 3464 2.3.6), not our "x-direct".
    assert (recipient.status, recipient.diagnostic) == (
        "5.0.0",
        "smtp; 550 error - no such recipient",
    )


def test_a_dsn_naming_the_message_only_by_its_returned_headers_fails_the_delivery(world):
    message = _send(world)
    report = (
        f"From: {world.partner.address}\nTo: {world.alice.address}\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\n'
        "\n--b1\nContent-Type: text/plain\n\nUndeliverable.\n"
        "--b1\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; {PARTNER}\n\n"
        f"Final-Recipient: rfc822; {world.partner.address}\nAction: failed\nStatus: 5.2.1\n\n"
        "--b1\nContent-Type: text/rfc822-headers\n\n"
        f"From: {world.alice.address}\nMessage-ID: {message.message_id}\nSubject: Referral\n\n"
        "--b1--\n"
    ).encode()
    assert _from_partner(world, report).reason == ""
    assert _state(world, message) == Delivery.State.FAILED
    assert len(_alice_dsns(world)) == 1


def test_the_dsn_for_a_refusal_is_from_the_senders_postmaster_and_quotes_the_smtp_reply(world):
    """RFC 3464: From someone who reads replies (2.1); the remote's reply as diagnostic type
    "smtp" (2.3.6); when the message reached us (2.2.5)."""
    world.sink.handler.reply = "550 5.1.1 no such user"
    message = _send(world)
    [raw] = _alice_dsns(world)
    notice = email.message_from_bytes(raw, policy=email.policy.default)
    assert notice["From"] == "postmaster@hospital.example.org"
    assert notice["Auto-Submitted"] == "auto-replied"
    per_message, per_recipient = field_blocks(raw, "delivery-status")
    assert email.utils.parsedate_to_datetime(dict(per_message)["Arrival-Date"]) == (
        message.created_at.replace(microsecond=0)
    )
    assert dict(per_recipient)["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    # Which server said so (2.3.5: the partner's route), and when we last tried (2.3.7).
    assert dict(per_recipient)["Remote-MTA"] == "dns; 127.0.0.1"
    attempted = email.utils.parsedate_to_datetime(dict(per_recipient)["Last-Attempt-Date"])
    assert abs((datetime.now(UTC) - attempted).total_seconds()) < 120


def test_the_dsn_for_an_unreachable_destination_names_no_remote_mta(world, settings):
    Route.objects.filter(domain=PARTNER).update(port=1)  # nothing listens there
    message = _send(world)
    delivery = Delivery.objects.get(message=message, recipient=world.partner.address)
    Delivery.objects.filter(pk=delivery.pk).update(
        first_attempt_at=delivery.first_attempt_at - settings.HISP_RETRY_PERIOD,
        next_attempt_at=None, state=Delivery.State.QUEUED,
    )
    assert outbound.deliver(delivery.pk) == "failed"
    [raw] = _alice_dsns(world)
    _per_message, per_recipient = field_blocks(raw, "delivery-status")
    assert "Remote-MTA" not in dict(per_recipient)  # no server answered
    assert "Last-Attempt-Date" in dict(per_recipient)


def test_a_received_report_is_logged_with_its_own_header_fields_and_signer(world):
    sent = _send(world)
    report = _mdn(world, sent.message_id, "processed").replace(
        b"MIME-Version", b"Subject: Processed: Referral\nMessage-ID: <mdn-1@partner.example.net>\n"
        b"MIME-Version", 1,
    )
    received = _from_partner(world, report)
    assert (received.kind, received.original) == (Message.Kind.MDN, sent)
    assert received.message_id == "<mdn-1@partner.example.net>"
    assert received.header_from == world.partner.address
    assert received.header_to == [world.alice.address]
    assert received.subject == "Processed: Referral"
    assert received.signer == world.partner.address
    assert len(received.signer_fingerprint) == 64
