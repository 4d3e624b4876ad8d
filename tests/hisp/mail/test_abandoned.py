"""A message or delivery whose worker keeps dying (or hanging until killed) is given up after
MAX_ABANDONED expired leases, with the usual record and DSNs, instead of taking down one worker
per lease for ever. The sweeper counts the abandoned leases; the state is what a killed worker
leaves (a claim that is never released)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from hisp import dsn
from hisp.models import AuditEvent, Delivery, MailboxEntry, Message
from hisp.services import compose, mail
from hisp.tasks import mail as tasks
from tests.hisp.mail.drive import drain


def _abandon(message: Message, times: int) -> None:
    for _ in range(times):
        # A worker claimed it and died (or hung until its time limit killed it).
        Message.objects.filter(pk=message.pk).update(
            state=Message.State.PROCESSING, claimed_at=timezone.now() - timedelta(hours=1)
        )
        mail.sweep()
    message.refresh_from_db()
    assert message.abandoned == times


def _receive(world) -> Message:
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<poison@partner.example.net>")
    return mail.accept_incoming(
        raw=partner.protect(inner, to=world.alice.address), mail_from=partner.address,
        rcpt_tos=[world.alice.address], peer="127.0.0.1:2525",
    )


def _send(world) -> Message:
    raw = compose.build_message(
        sender=world.alice.address, to=[world.partner.address], subject="Referral",
        body_text="Please see.", delivery_notification=False,
    )
    return compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")


def _alice_dsns(world) -> list[dsn.Dsn]:
    entries = MailboxEntry.objects.filter(address=world.alice, message__kind=Message.Kind.DSN)
    return [dsn.parse(bytes(e.message.raw)) for e in entries]


def test_a_received_message_survives_fewer_abandoned_leases(world):
    message = _receive(world)
    _abandon(message, mail.MAX_ABANDONED - 1)
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.DELIVERED
    assert len(world.sink.handler.messages) == 1  # its processed MDN


def test_a_received_message_abandoned_too_often_is_rejected_without_an_mdn(world):
    message = _receive(world)
    _abandon(message, mail.MAX_ABANDONED)
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.REJECTED and message.reason == "malformed"
    assert Delivery.objects.get(message=message).state == Delivery.State.REJECTED
    assert not MailboxEntry.objects.filter(message=message).exists()
    assert world.sink.handler.messages == []  # failed processing never gets an MDN
    assert AuditEvent.objects.filter(action="message.rejected",
                                     object_id=str(message.pk)).exists()


def test_an_outgoing_message_abandoned_too_often_fails_with_one_dsn(world):
    message = _send(world)
    _abandon(message, mail.MAX_ABANDONED)
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.FAILED
    [delivery] = Delivery.objects.filter(message=message)
    assert delivery.state == Delivery.State.FAILED
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.3.0"
    assert world.sink.handler.messages == []


def test_a_delivery_attempt_abandoned_too_often_fails_with_one_dsn(world):
    message = _send(world)
    Delivery.objects.filter(message=message).update(claimed_at=timezone.now())
    drain()  # protects it; the attempt finds the claim taken (its "worker" is stuck)
    [delivery] = Delivery.objects.filter(message=message)
    assert delivery.wire is not None and delivery.state == Delivery.State.QUEUED
    for n in range(1, mail.MAX_ABANDONED + 1):
        Delivery.objects.filter(pk=delivery.pk).update(
            claimed_at=timezone.now() - timedelta(hours=1)
        )
        mail.sweep()
        delivery.refresh_from_db()
        assert delivery.abandoned == n
        if n < mail.MAX_ABANDONED:
            Delivery.objects.filter(pk=delivery.pk).update(claimed_at=timezone.now())
            drain()  # the re-queued task finds it claimed again: nothing is sent
    drain()
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.FAILED
    assert "cut short repeatedly" in delivery.detail
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.3.0"
    assert world.sink.handler.messages == []


def test_mail_tasks_end_before_their_claim_does(settings):
    lease = settings.HISP_CLAIM_LEASE.total_seconds()
    for task in (tasks.process_incoming, tasks.process_incoming_batch, tasks.process_outgoing,
                 tasks.deliver):
        assert task.time_limit == lease
        assert 0 < task.soft_time_limit < task.time_limit
