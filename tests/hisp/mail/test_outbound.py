"""Outbound: alice writes to the partner (and to bob, hosted here); we protect, deliver over
SMTP (or through our own inbound path), retry, track MDNs and tell alice about failures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from hisp import dsn
from hisp.models import Delivery, MailboxEntry, Message, Route
from hisp.services import compose, mail, outbound, tracking
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, Partner, crlf


def _send(world, *, to: list[str], timely: bool = False) -> Message:
    raw = compose.build_message(
        sender=world.alice.address, to=to, subject="Referral for J. Doe",
        body_text="Please see the patient.", delivery_notification=timely,
        attachments=[("summary.txt", "text/plain", b"hello")],
    )
    return compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")


def _partner_report(
    world, message: Message, disposition: str, *, final: bool = False, signer: Partner | None = None
) -> None:
    """The partner answers with an MDN (hand-written RFC 3798 text, signed and encrypted)."""
    extra = "X-DIRECT-FINAL-DESTINATION-DELIVERY: \n" if final else ""
    body = crlf(
        (
            f"From: {world.partner.address}\nTo: {world.alice.address}\n"
            f"Message-ID: <mdn-{disposition}-{message.pk}@partner.example.net>\n"
            "Subject: Processed\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=disposition-notification; boundary="b1"\n'
            "\n--b1\nContent-Type: text/plain\n\nProcessed.\n--b1\n"
            "Content-Type: message/disposition-notification\n\n"
            f"Reporting-UA: {PARTNER}; openssl\nFinal-Recipient: rfc822;{world.partner.address}\n"
            f"Original-Message-ID: {message.message_id}\n"
            f"Disposition: automatic-action/MDN-sent-automatically;{disposition}\n{extra}"
            "\n--b1--\n"
        ).encode()
    )
    mail.accept_incoming(
        raw=world.partner.protect(body, to=world.alice.address, signer=signer),
        mail_from=world.partner.address, rcpt_tos=[world.alice.address], peer="partner",
    )
    drain()


def _delivery(message: Message, rcpt: str) -> Delivery:
    return Delivery.objects.get(message=message, recipient=rcpt)


def _alice_dsns(world) -> list[dsn.Dsn]:
    entries = MailboxEntry.objects.filter(
        address=world.alice, message__kind=Message.Kind.DSN
    ).order_by("id")
    return [dsn.parse(bytes(e.message.raw)) for e in entries]


def _alice_dsn_texts(world) -> list[str]:
    """The human-readable part of each DSN in alice's mailbox, as one line."""
    entries = MailboxEntry.objects.filter(
        address=world.alice, message__kind=Message.Kind.DSN
    ).order_by("id")
    return [" ".join(e.body_text.split()) for e in entries]


def test_message_to_partner_is_signed_encrypted_and_sent(world):
    message = _send(world, to=[world.partner.address])
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.SENT
    delivery = _delivery(message, world.partner.address)
    assert delivery.state == Delivery.State.SENT
    [received] = world.sink.handler.messages
    assert received.rcpt_tos == [world.partner.address]
    assert received.mail_from == world.alice.address
    assert b"Please see the patient" not in received.data  # never plaintext on the wire
    opened = world.partner.open(received.data, our_domain=HOSTED)
    assert b"Please see the patient." in opened
    assert b"summary.txt" in opened


def test_processed_then_dispatched_mdn_update_tracking_and_notify_once(world):
    message = _send(world, to=[world.partner.address], timely=True)
    drain()
    _partner_report(world, message, "processed")
    assert _delivery(message, world.partner.address).state == Delivery.State.PROCESSED
    _partner_report(world, message, "dispatched", final=True)
    assert _delivery(message, world.partner.address).state == Delivery.State.DISPATCHED
    [notice] = _alice_dsns(world)
    assert notice.recipients[0].action == "delivered"
    # The same MDN again changes nothing and notifies nobody.
    _partner_report(world, message, "dispatched", final=True)
    assert len(_alice_dsns(world)) == 1
    # MDNs are not inbox mail.
    assert not MailboxEntry.objects.filter(
        address=world.alice, message__kind=Message.Kind.MDN
    ).exists()


def test_mdn_from_another_domain_cannot_change_tracking(world):
    message = _send(world, to=["carol@elsewhere.example.com"])
    Message.objects.filter(pk=message.pk).update(state=Message.State.SENT)
    Delivery.objects.filter(message=message).update(state=Delivery.State.SENT)
    # The partner's MDN (valid and trusted) about a delivery to another domain is ignored.
    _partner_report(world, message, "failed")
    assert _delivery(message, "carol@elsewhere.example.com").state == Delivery.State.SENT
    assert _alice_dsns(world) == []


@pytest.mark.parametrize("disposition", ["failed", "processed"])
def test_mdn_signed_by_an_untrusted_certificate_changes_nothing(world, tmp_path, disposition):
    # Anyone can encrypt to alice's public certificate; only a signer that alice's domain
    # trusts may fail (or confirm) her deliveries.
    message = _send(world, to=[world.partner.address])
    drain()
    stranger = Partner.create(tmp_path / "stranger", slot="stranger",
                              address=world.partner.address)
    _partner_report(world, message, disposition, signer=stranger)
    delivery = _delivery(message, world.partner.address)
    assert (delivery.state, delivery.processed_at) == (Delivery.State.SENT, None)
    assert _alice_dsns(world) == []
    report = Message.objects.get(direction=Message.Direction.INBOUND, peer="partner")
    assert (report.state, report.reason) == (Message.State.REJECTED, "untrusted-signer")
    # The genuine report still counts.
    _partner_report(world, message, "processed")
    assert _delivery(message, world.partner.address).processed_at is not None


def test_recipient_without_certificate_fails_with_one_dsn(world):
    message = _send(world, to=["nocert@elsewhere.example.com"])
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.FAILED
    assert message.reason == "no-recipient-certificate"
    delivery = _delivery(message, "nocert@elsewhere.example.com")
    assert (delivery.state, delivery.detail) == (Delivery.State.FAILED, "no-recipient-certificate")
    [report] = _alice_dsns(world)
    assert report.original_message_id == message.message_id
    assert (report.recipients[0].action, report.recipients[0].status) == ("failed", "5.7.31")
    drain()
    assert len(_alice_dsns(world)) == 1


def test_pending_certificate_hold_tells_the_sender_and_releases_later(world, tmp_path):
    Route.objects.filter(domain=PARTNER).update(hold_pending_certificate=True)
    nurse = Partner.create(tmp_path / "nurse", slot="nurse", address=f"nurse@{PARTNER}")
    message = _send(world, to=[nurse.address])
    drain()
    delivery = _delivery(message, nurse.address)
    assert delivery.state == Delivery.State.PENDING_CERTIFICATE
    [pending] = _alice_dsns(world)
    assert (pending.recipients[0].action, pending.recipients[0].status) == ("delayed", "4.7.31")
    assert outbound.deliver(delivery.pk) == "still-pending"
    # Staff import the partner's certificate (and CA) out of band; the re-check releases it.
    nurse.exchange_with(HOSTED)
    assert outbound.release_pending(domain=PARTNER) == 1
    drain()
    assert _delivery(message, nurse.address).state == Delivery.State.SENT
    [received] = world.sink.handler.messages
    assert b"Please see the patient." in nurse.open(received.data, our_domain=HOSTED)
    assert len(_alice_dsns(world)) == 1


def test_pending_certificate_fails_after_the_hold_period(world, tmp_path):
    Route.objects.filter(domain=PARTNER).update(hold_pending_certificate=True)
    message = _send(world, to=[f"nurse@{PARTNER}"])
    drain()
    delivery = _delivery(message, f"nurse@{PARTNER}")
    Delivery.objects.filter(pk=delivery.pk).update(
        first_attempt_at=timezone.now() - timedelta(days=30)
    )
    assert outbound.deliver(delivery.pk) == "failed"
    assert [d.recipients[0].action for d in _alice_dsns(world)] == ["delayed", "failed"]
    assert _alice_dsns(world)[1].recipients[0].status == "5.7.31"


def test_temporary_failures_are_retried_then_fail_with_one_dsn(world, settings):
    world.sink.handler.reply = "451 4.3.0 try again later"
    message = _send(world, to=[world.partner.address])
    drain()
    delivery = _delivery(message, world.partner.address)
    assert delivery.state == Delivery.State.DEFERRED
    assert delivery.attempts == 1
    assert delivery.next_attempt_at > timezone.now()
    # The sweeper re-queues it once due; the second attempt doubles the back-off.
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert mail.sweep()["deliveries"] == 1
    assert outbound.deliver(delivery.pk) == "deferred"
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    # After the retry period: failed, exactly one DSN.
    Delivery.objects.filter(pk=delivery.pk).update(
        first_attempt_at=timezone.now() - settings.HISP_RETRY_PERIOD - timedelta(minutes=1)
    )
    assert outbound.deliver(delivery.pk) == "failed"
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.4.7"
    explanation = _alice_dsn_texts(world)[0]
    assert (
        "the destination refused it for now or could not be reached, for 3 days "
        "(last: 451 4.3.0 try again later)"
    ) in explanation
    assert outbound.deliver(delivery.pk) == "not-claimed"
    assert len(_alice_dsns(world)) == 1


def test_a_refusal_after_the_retry_period_is_reported_as_that_refusal(world, settings):
    """The last attempt of a long retry meets a 5xx: the sender learns what the destination
    said, with its status, not that time ran out."""
    world.sink.handler.reply = "451 4.3.0 try again later"
    message = _send(world, to=[world.partner.address])
    drain()
    delivery = _delivery(message, world.partner.address)
    assert delivery.state == Delivery.State.DEFERRED
    Delivery.objects.filter(pk=delivery.pk).update(
        first_attempt_at=timezone.now() - settings.HISP_RETRY_PERIOD - timedelta(minutes=1)
    )
    world.sink.handler.reply = "550 5.2.1 mailbox disabled"
    assert outbound.deliver(delivery.pk) == "failed"
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.2.1"
    explanation = _alice_dsn_texts(world)[0]
    assert "the destination refused it: 550 5.2.1 mailbox disabled" in explanation
    assert "3 days" not in explanation


def test_permanent_failure_fails_at_once_with_one_dsn(world):
    world.sink.handler.reply = "550 5.1.1 no such user"
    message = _send(world, to=[world.partner.address])
    drain()
    delivery = _delivery(message, world.partner.address)
    assert delivery.state == Delivery.State.FAILED
    assert delivery.attempts == 1
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.1.1"


def test_unreachable_destination_is_deferred(world):
    Route.objects.filter(domain=PARTNER).update(port=1)  # nothing listens there
    message = _send(world, to=[world.partner.address])
    drain()
    assert _delivery(message, world.partner.address).state == Delivery.State.DEFERRED


def test_required_tls_not_offered_is_deferred(world):
    Route.objects.filter(domain=PARTNER).update(require_tls=True)  # the sink has no STARTTLS
    message = _send(world, to=[world.partner.address])
    drain()
    delivery = _delivery(message, world.partner.address)
    assert delivery.state == Delivery.State.DEFERRED
    assert "STARTTLS" in delivery.detail
    assert world.sink.handler.messages == []


def test_missing_processed_mdn_fails_once_and_late_mdn_changes_nothing(world, settings):
    message = _send(world, to=[world.partner.address])
    drain()
    assert tracking.expire_overdue() == 0
    later = timezone.now() + settings.HISP_MDN_PROCESSED_TIMEOUT + timedelta(minutes=1)
    assert tracking.expire_overdue(now=later) == 1
    assert tracking.expire_overdue(now=later) == 0
    delivery = _delivery(message, world.partner.address)
    assert delivery.state == Delivery.State.FAILED
    assert len(_alice_dsns(world)) == 1
    _partner_report(world, message, "processed")
    assert _delivery(message, world.partner.address).state == Delivery.State.FAILED
    assert len(_alice_dsns(world)) == 1


def test_missing_dispatched_mdn_fails_timely_delivery(world, settings):
    message = _send(world, to=[world.partner.address], timely=True)
    drain()
    _partner_report(world, message, "processed")
    later = timezone.now() + settings.HISP_MDN_DISPATCHED_TIMEOUT + timedelta(minutes=1)
    assert tracking.expire_overdue(now=later) == 1
    [report] = _alice_dsns(world)
    assert report.recipients[0].action == "failed"


def test_failed_mdn_fails_the_delivery_with_one_notice(world):
    message = _send(world, to=[world.partner.address])
    drain()
    _partner_report(world, message, "failed")
    assert _delivery(message, world.partner.address).state == Delivery.State.FAILED
    assert len(_alice_dsns(world)) == 1


def test_hosted_recipient_goes_through_protect_and_unprotect(world):
    message = _send(world, to=[world.bob.address], timely=True)
    drain()
    inbound = Message.objects.get(direction=Message.Direction.INBOUND, kind=Message.Kind.REGULAR,
                                  peer="local")
    assert inbound.state == Message.State.DELIVERED
    assert inbound.signer == world.alice.address
    assert b"Please see the patient" not in bytes(inbound.raw)  # it was encrypted
    entry = MailboxEntry.objects.get(address=world.bob)
    assert entry.subject == "Referral for J. Doe"
    assert entry.has_attachments
    # bob's processed and dispatched MDNs came back through the same path.
    assert _delivery(message, world.bob.address).state == Delivery.State.DISPATCHED
    [notice] = _alice_dsns(world)
    assert notice.recipients[0].action == "delivered"
    assert world.sink.handler.messages == []


def test_hosted_disabled_mailbox_reports_failure_to_the_sender(world):
    type(world.bob).objects.filter(pk=world.bob.pk).update(status="disabled")
    message = _send(world, to=[world.bob.address])
    drain()
    assert _delivery(message, world.bob.address).state == Delivery.State.FAILED
    [report] = _alice_dsns(world)
    assert report.recipients[0].action == "failed"
    assert not MailboxEntry.objects.filter(address=world.bob).exists()


def test_unknown_hosted_recipient_fails_at_once(world):
    message = _send(world, to=[f"nobody@{HOSTED}"])
    drain()
    assert _delivery(message, f"nobody@{HOSTED}").state == Delivery.State.FAILED
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.1.1"


def test_sweeper_leaves_unprotected_deliveries_to_their_message(world):
    # A transient protection failure being waited out: the message comes back on its own
    # schedule; its unprotected deliveries get no deliver task (it could only say not-ready).
    message = _send(world, to=[world.partner.address])
    long_ago = timezone.now() - timedelta(hours=1)
    Message.objects.filter(pk=message.pk).update(attempts=3, updated_at=timezone.now())
    Delivery.objects.filter(message=message).update(updated_at=long_ago)
    assert mail.sweep()["deliveries"] == 0
    Delivery.objects.filter(message=message).update(wire=b"protected", updated_at=long_ago)
    assert mail.sweep()["deliveries"] == 1  # a protected one whose task was lost: queued


def test_an_attempt_under_an_old_claim_sends_nothing(world):
    # The deadline counts from the claim, not from the attempt: the MDNs of one inbound
    # message, sent in turn under one claim, must all be over before the sweeper may hand
    # the claim to another worker, or the partner would get them twice.
    message = _send(world, to=[world.partner.address])
    drain()
    assert len(world.sink.handler.messages) == 1
    delivery = _delivery(message, world.partner.address)
    Delivery.objects.filter(pk=delivery.pk).update(
        state=Delivery.State.QUEUED, claimed_at=timezone.now() - timedelta(minutes=9)
    )  # the lease is 10 minutes: an attempt may use only the first half
    delivery.refresh_from_db()
    outbound.send_claimed(delivery)
    assert len(world.sink.handler.messages) == 1  # nothing sent a second time
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.DEFERRED
    assert "time limit" in delivery.detail


def test_a_pending_delivery_whose_lease_ran_out_during_discovery_is_left_to_its_new_worker(
    world,
):
    Route.objects.filter(domain=PARTNER).update(hold_pending_certificate=True)
    message = _send(world, to=[f"nurse@{PARTNER}"])
    drain()
    delivery = _delivery(message, f"nurse@{PARTNER}")
    now = timezone.now()
    Delivery.objects.filter(pk=delivery.pk).update(first_attempt_at=now - timedelta(days=30))
    delivery.refresh_from_db()
    # This worker claimed it, discovery outlasted the lease, and another worker claimed it.
    delivery.claimed_at = now - timedelta(minutes=20)
    Delivery.objects.filter(pk=delivery.pk).update(claimed_at=now)
    assert outbound._recheck_pending(delivery, now) == "lease-lost"
    assert _delivery(message, f"nurse@{PARTNER}").state == Delivery.State.PENDING_CERTIFICATE
    assert [d.recipients[0].action for d in _alice_dsns(world)] == ["delayed"]
