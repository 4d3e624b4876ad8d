"""Outbound review: each destination's protected copy is stored as soon as it is made. A worker
killed between two destinations loses nothing and sends nothing twice; a worker whose claim
was taken over meanwhile stores nothing more."""

from __future__ import annotations

from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.utils import timezone

from hisp.models import Delivery, MailboxEntry, Message
from hisp.services import compose, mail, outbound, pki, routes
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import leaf_certificate

SITE = "site1.example.net"


class Killed(BaseException):
    """What the worker's death looks like from inside: nothing after it runs."""


def _two_destinations(world) -> Message:
    partner = world.partner
    other = f"doc@{SITE}"
    cert = leaf_certificate(partner.ca, partner.ca_key, partner.key, other)
    pki.import_certificate(cert.public_bytes(serialization.Encoding.PEM))
    routes.set_route(SITE, world.sink.target)
    raw = compose.build_message(
        sender=world.alice.address,
        to=[partner.address, other],
        subject="Referral",
        body_text="Please see the patient.",
        delivery_notification=False,
    )
    return compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")


def _interrupt_second_protection(monkeypatch, action) -> None:
    real = outbound._protect
    calls = []

    def protect(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            action()
        return real(*args, **kwargs)

    monkeypatch.setattr(outbound, "_protect", protect)


def test_a_worker_killed_between_destinations_loses_nothing_and_sends_once(world, monkeypatch):
    message = _two_destinations(world)

    def die() -> None:
        raise Killed

    _interrupt_second_protection(monkeypatch, die)
    try:
        outbound.process(message.pk)
    except Killed:
        pass
    else:
        raise AssertionError("the worker was not killed")
    monkeypatch.undo()
    assert Delivery.objects.filter(message=message, wire__isnull=False).count() == 1
    # The lease runs out; the sweeper hands the message, and the protected delivery whose
    # task was never queued, to the next worker.
    old = timezone.now() - settings.HISP_CLAIM_LEASE - settings.HISP_QUEUE_GRACE
    Message.objects.filter(pk=message.pk).update(claimed_at=old)
    Delivery.objects.filter(message=message).update(updated_at=old)
    counts = mail.sweep()
    assert (counts["outgoing"], counts["deliveries"]) == (1, 1)
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.SENT
    assert set(message.deliveries.values_list("state", flat=True)) == {Delivery.State.SENT}
    assert sorted(r.rcpt_tos[0] for r in world.sink.handler.messages) == sorted(message.envelope_to)
    assert not MailboxEntry.objects.filter(message__kind=Message.Kind.DSN).exists()


def test_a_worker_whose_claim_was_taken_over_stores_no_more_copies(world, monkeypatch):
    message = _two_destinations(world)

    def taken_over() -> None:
        # The lease ran out while the first copy was made; another worker claimed it.
        Message.objects.filter(pk=message.pk).update(
            claimed_at=timezone.now() + timedelta(seconds=1)
        )

    _interrupt_second_protection(monkeypatch, taken_over)
    assert outbound.process(message.pk) == "lease-lost"
    assert Delivery.objects.filter(message=message, wire__isnull=False).count() == 1
    assert world.sink.handler.messages == []
    message.refresh_from_db()
    assert message.state == Message.State.PROCESSING  # the other worker's to finish
