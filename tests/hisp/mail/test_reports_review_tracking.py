"""Delivery tracking as a partner HISP's reports drive it (Implementation Guide for Delivery
Notification in Direct 1.0; RFC 3798, RFC 3464): reports that prove less than the sender asked
for, MDNs for a delivery we were still retrying, and DSNs naming many recipients."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hisp import dsn
from hisp.models import Delivery, Message
from hisp.services import inbound, mail, tracking
from tests.hisp.mail.partner import PARTNER, crlf
from tests.hisp.mail.test_report_tracking import _alice_dsns, _from_partner, _mdn, _send, _state


def test_a_dispatched_mdn_without_the_final_delivery_field_still_proves_processing(world, settings):
    """Timely delivery was asked for; the partner answers with a dispatched MDN only, without
    X-DIRECT-FINAL-DESTINATION-DELIVERY. That is no final-delivery confirmation (IG 3.3), but
    the message was processed: the sender must not be told an hour later that no notification
    came at all. It was a SENT delivery failed by the processed timeout."""
    message = _send(world, timely=True)
    report = _from_partner(world, _mdn(world, message.message_id, "dispatched"))
    assert (report.kind, report.reason) == (Message.Kind.MDN, "")
    assert _state(world, message) == Delivery.State.PROCESSED
    after_processed = timezone.now() + settings.HISP_MDN_PROCESSED_TIMEOUT + timedelta(minutes=1)
    assert tracking.expire_overdue(after_processed) == 0
    assert _alice_dsns(world) == []
    # Still no final delivery: the dispatched timeout fails it, once.
    after_dispatched = timezone.now() + settings.HISP_MDN_DISPATCHED_TIMEOUT + timedelta(minutes=1)
    assert tracking.expire_overdue(after_dispatched) == 1
    assert _state(world, message) == Delivery.State.FAILED
    [notice] = _alice_dsns(world)
    assert "no dispatched MDN" in dsn.parse(notice).recipients[0].diagnostic


def test_a_timely_delivery_processed_while_waiting_for_a_retry_still_times_out(world, settings):
    """The attempt reached the partner but its reply was lost: the delivery waits for a retry
    (deferred, never marked sent) when the processed MDN arrives. With no sent time, the
    dispatched timeout never matched it: it stayed processed for ever and the sender never
    learnt that final delivery was not confirmed."""
    message = _send(world, timely=True)
    Delivery.objects.filter(message=message).update(
        state=Delivery.State.DEFERRED, sent_at=None, next_attempt_at=timezone.now()
    )
    _from_partner(world, _mdn(world, message.message_id, "processed"))
    assert _state(world, message) == Delivery.State.PROCESSED
    soon = timezone.now() + settings.HISP_MDN_DISPATCHED_TIMEOUT - timedelta(minutes=1)
    assert tracking.expire_overdue(soon) == 0
    later = timezone.now() + settings.HISP_MDN_DISPATCHED_TIMEOUT + timedelta(minutes=1)
    assert tracking.expire_overdue(later) == 1
    assert tracking.expire_overdue(later) == 0
    assert _state(world, message) == Delivery.State.FAILED
    assert len(_alice_dsns(world)) == 1


def _dsn_report(world, message: Message, blocks: str) -> bytes:
    return (
        f"From: {world.partner.address}\nTo: {world.alice.address}\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\n'
        "\n--b1\nContent-Type: text/plain\n\nUndeliverable.\n"
        "--b1\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; {PARTNER}\nX-Original-Message-ID: {message.message_id}\n\n"
        f"{blocks}--b1--\n"
    ).encode()


def _block(recipient: str, action: str = "failed", status: str = "5.1.1") -> str:
    return f"Final-Recipient: rfc822; {recipient}\nAction: {action}\nStatus: {status}\n\n"


def test_a_dsn_with_many_recipient_blocks_costs_a_bounded_number_of_queries(world):
    """Each block cost a query for the message and one for its deliveries (each reading the
    protected bytes), and each repeated failure an UPDATE: a trusted partner's DSN of 20,000
    blocks held a worker for many thousands of statements."""
    message = _send(world)
    others = "".join(_block(f"nobody{i}@{PARTNER}") for i in range(40))
    repeated = _block(world.partner.address) * 40
    report = _dsn_report(world, message, others + repeated)
    mail.accept_incoming(
        raw=world.partner.protect(crlf(report), to=world.alice.address),
        mail_from="",
        rcpt_tos=[world.alice.address],
        peer="partner",
    )
    [pk] = Message.objects.filter(direction=Message.Direction.INBOUND, peer="partner").values_list(
        "pk", flat=True
    )
    with CaptureQueriesContext(connection) as queries:
        assert inbound.process(pk) == "report:applied"
    assert len(queries.captured_queries) < 40
    assert not [q for q in queries.captured_queries if '"hisp_delivery"."wire"' in q["sql"]]
    assert _state(world, message) == Delivery.State.FAILED
    assert len(_alice_dsns(world)) == 1


def test_a_dsn_reporting_delay_or_relay_changes_nothing(world):
    message = _send(world)
    for action, status in (("delayed", "4.4.7"), ("relayed", "2.0.0"), ("expanded", "2.0.0")):
        report = _from_partner(
            world, _dsn_report(world, message, _block(world.partner.address, action, status))
        )
        assert (report.kind, report.reason) == (Message.Kind.DSN, "")
    assert _state(world, message) == Delivery.State.SENT
    assert _alice_dsns(world) == []


def test_an_mdn_naming_our_message_only_in_in_reply_to_confirms_the_delivery(world):
    """A partner that leaves Original-Message-ID out (against RFC 3798 3.2.5) but answers as a
    reply: the delivery is confirmed, not failed an hour later for want of a notification that
    came."""
    message = _send(world)
    report = (
        _mdn(world, message.message_id, "processed")
        .replace(f"Original-Message-ID: {message.message_id}\n".encode(), b"")
        .replace(b"MIME-Version", f"In-Reply-To: {message.message_id}\nMIME-Version".encode(), 1)
    )
    assert _from_partner(world, report).reason == ""
    assert _state(world, message) == Delivery.State.PROCESSED


def test_a_processed_mdn_after_the_dispatched_one_changes_nothing(world):
    message = _send(world, timely=True)
    dispatched = _mdn(world, message.message_id, "dispatched").replace(
        b";dispatched\n", b";dispatched\nX-DIRECT-FINAL-DESTINATION-DELIVERY:\n"
    )
    _from_partner(world, dispatched)
    assert _state(world, message) == Delivery.State.DISPATCHED
    _from_partner(world, _mdn(world, message.message_id, "processed"))
    _from_partner(world, _mdn(world, message.message_id, "failed"))
    assert _state(world, message) == Delivery.State.DISPATCHED
    [notice] = _alice_dsns(world)
    assert dsn.parse(notice).recipients[0].action == "delivered"


def test_a_huge_diagnostic_from_a_partner_is_cut_short_in_the_senders_dsn(world):
    """A partner's Diagnostic-Code of a megabyte went twice, whole, into the DSN in our
    sender's mailbox (its explanation and its own Diagnostic-Code)."""
    message = _send(world)
    huge = "Diagnostic-Code: smtp; 550 " + "no such user " * 80_000
    block = _block(world.partner.address).replace("Status: 5.1.1\n", f"Status: 5.1.1\n{huge}\n")
    _from_partner(world, _dsn_report(world, message, block))
    assert _state(world, message) == Delivery.State.FAILED
    [notice] = _alice_dsns(world)
    assert len(notice) < 10_000
    [recipient] = dsn.parse(notice).recipients
    assert recipient.diagnostic.startswith("smtp; 550 no such user no such user")


def test_the_senders_dsn_quotes_a_partners_status_as_a_valid_failure_code(world):
    """A partner's DSN says "failed" with a 4.x.x Status: the DSN in our sender's mailbox said
    Action failed with Status 4.4.7, which RFC 3464 2.3.4 does not allow (and mail clients
    read as "will be retried")."""
    message = _send(world)
    _from_partner(world, _dsn_report(world, message, _block(world.partner.address, status="4.4.7")))
    assert _state(world, message) == Delivery.State.FAILED
    [notice] = _alice_dsns(world)
    [recipient] = dsn.parse(notice).recipients
    assert (recipient.action, recipient.status) == ("failed", "5.4.7")
