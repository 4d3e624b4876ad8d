"""Outbound recipients of one domain share one SMTP transaction, and each keeps its own state:
a 550 fails only that delivery (one DSN), a 4xx defers only that one."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from hisp.models import Delivery, MailboxEntry, Message
from hisp.services import compose, outbound, routes
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, Partner
from tests.hisp.mail.test_egress_batch import scripted


def test_one_transaction_per_domain_with_per_recipient_results(world, tmp_path):
    others = [
        Partner.create(tmp_path / slot, slot=slot, address=f"{slot}@{PARTNER}")
        for slot in ("gone", "busy")
    ]
    for other in others:
        other.exchange_with("hospital.example.org")
    recipients = [world.partner.address, *(o.address for o in others)]
    replies = {"gone": "550 5.1.1 No such user", "busy": "451 4.2.1 Mailbox busy"}
    with scripted(rcpt_replies=replies) as (sink, hop):
        routes.set_route(PARTNER, f"{hop.host}:{hop.port}")
        raw = compose.build_message(sender=world.alice.address, to=recipients,
                                    subject="Referral", body_text="Please see the patient.")
        message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
        drain()
        states = {d.recipient.partition("@")[0]: d.state for d in message.deliveries.all()}
        assert states == {"doc": Delivery.State.SENT, "gone": Delivery.State.FAILED,
                          "busy": Delivery.State.DEFERRED}
        assert len(sink.mails) == 1  # one MAIL transaction for the three of them
        assert [t.rcpt_tos for t in sink.delivered] == [[world.partner.address]]
        dsns = MailboxEntry.objects.filter(address=world.alice, message__kind=Message.Kind.DSN)
        assert dsns.count() == 1
        # The retry sends to the deferred recipient only.
        sink.rcpt_replies.clear()
        busy = message.deliveries.get(recipient__startswith="busy@")
        Delivery.objects.filter(pk=busy.pk).update(next_attempt_at=timezone.now() - timedelta(1))
        assert outbound.deliver(busy.pk) == "sent"
        assert [t.rcpt_tos for t in sink.delivered][1:] == [[f"busy@{PARTNER}"]]
        assert dsns.count() == 1
