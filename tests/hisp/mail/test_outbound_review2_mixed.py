"""Outbound review: one message to recipients of every kind (hosted, a partner, one without a
certificate, one on a domain that holds for certificates, one named twice in two cases):
each ends with its own outcome, once, and the sender hears exactly what each warrants."""

from __future__ import annotations

from hisp import dsn
from hisp.models import Delivery, MailboxEntry, Message
from hisp.services import compose, outbound, routes
from tests.hisp.mail.drive import drain

NOCERT = "nocert@elsewhere.example.com"
HELD = "nurse@held.example.org"


def _alice_reports(world) -> list[tuple[str, str, str]]:
    entries = MailboxEntry.objects.filter(
        address=world.alice, message__kind=Message.Kind.DSN
    ).order_by("id")
    reports = [dsn.parse(bytes(e.message.raw)) for e in entries]
    return sorted(
        (r.recipients[0].final_recipient, r.recipients[0].action, r.recipients[0].status)
        for r in reports
    )


def test_each_recipient_of_a_mixed_message_gets_its_outcome_once(world):
    routes.set_route("held.example.org", world.sink.target, hold_pending_certificate=True)
    bob = world.bob.address
    raw = compose.build_message(
        sender=world.alice.address,
        to=[world.partner.address, bob.upper(), NOCERT],
        cc=[HELD, bob],
        subject="Referral",
        body_text="Please see the patient.",
        delivery_notification=False,
    )
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    assert message.deliveries.count() == 4  # bob once, in either case
    drain()
    states = dict(message.deliveries.values_list("recipient", "state"))
    assert states == {
        world.partner.address: Delivery.State.SENT,
        bob.upper(): Delivery.State.PROCESSED,  # through our own inbound path, MDN matched
        NOCERT: Delivery.State.FAILED,
        HELD: Delivery.State.PENDING_CERTIFICATE,
    }
    message.refresh_from_db()
    assert message.state == Message.State.SENT
    assert _alice_reports(world) == sorted(
        [
            (NOCERT, "failed", "5.7.31"),
            (HELD, "delayed", "4.7.31"),
        ]
    )
    # bob has it once, the partner once, and no one else anything.
    assert (
        MailboxEntry.objects.filter(
            address=world.bob,
            message__kind=Message.Kind.REGULAR,
            folder=MailboxEntry.SystemFolder.INBOX,
        ).count()
        == 1
    )
    assert [r.rcpt_tos for r in world.sink.handler.messages] == [[world.partner.address]]
    # Running everything again changes nothing and tells no one anything more.
    assert outbound.process(message.pk) == "not-claimed"
    for delivery in message.deliveries.all():
        outbound.deliver(delivery.pk, only_due=True)
    drain()
    assert dict(message.deliveries.values_list("recipient", "state")) == states
    assert len(_alice_reports(world)) == 2
    assert len(world.sink.handler.messages) == 1


def test_a_quoted_local_part_without_a_certificate_fails_once_and_nothing_leaves(world):
    quoted = '"doc smith"@partner.example.net'
    raw = compose.build_message(
        sender=world.alice.address,
        to=[quoted],
        subject="Referral",
        body_text="Please see the patient.",
        delivery_notification=False,
    )
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    assert message.envelope_to == [quoted]
    drain()
    delivery = message.deliveries.get()
    assert delivery.state == Delivery.State.FAILED
    assert [(a, s) for _r, a, s in _alice_reports(world)] == [("failed", "5.7.31")]
    assert world.sink.handler.messages == []
