"""The hot paths' one-statement writes (PostgreSQL CTEs) leave exactly what the ORM
transactions they replace leave: the same rows, the same audit events, the same lease rule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from hisp import egress
from hisp.models import AuditEvent, Delivery, DeliveryEvent, MailboxEntry, Message
from hisp.services import inbound, mail, outbound
from tests.hisp.mail.drive import drain

MODES = [pytest.param(True, id="one-statement"), pytest.param(False, id="orm-transaction")]


@pytest.fixture(params=MODES)
def single(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param and connection.vendor != "postgresql":
        pytest.skip("the one-statement writes are PostgreSQL's")
    monkeypatch.setattr(mail, "single_statement_writes", lambda: request.param)
    monkeypatch.setattr(outbound, "single_statement_writes", lambda: request.param)
    monkeypatch.setattr(inbound, "single_statement_writes", lambda: request.param)
    return bool(request.param)


def _audit(obj_type: str, pk: int) -> list[tuple[str, str, str | None, dict[str, object]]]:
    return [
        (e.action, e.actor_label, e.client_address, e.detail)
        for e in AuditEvent.objects.filter(object_type=obj_type, object_id=str(pk))
    ]


def test_accept_incoming_stores_the_message_and_its_audit_event(single: bool, db: None) -> None:
    raw = b"Subject: x\r\n\r\nbody\r\n"
    before = timezone.now()
    message = mail.accept_incoming(
        raw=raw, mail_from="doc@partner.example.net", rcpt_tos=["a@h.example", "b@h.example"],
        peer="192.0.2.7:4025",
    )
    stored = Message.objects.get(pk=message.pk)
    assert bytes(stored.raw) == raw
    assert stored.direction == Message.Direction.INBOUND
    assert stored.state == Message.State.RECEIVED
    assert stored.kind == Message.Kind.REGULAR
    assert stored.envelope_from == "doc@partner.example.net"
    assert stored.envelope_to == ["a@h.example", "b@h.example"]
    assert stored.header_to == [] and stored.peer == "192.0.2.7:4025"
    assert stored.attempts == 0 and stored.claimed_at is None and stored.content is None
    assert stored.created_at >= before and stored.updated_at >= before
    assert not message._state.adding
    assert _audit("hisp.message", message.pk) == [
        ("message.received", "smtp:192.0.2.7:4025", "192.0.2.7",
         {"size": len(raw), "recipients": 2}),
    ]


def _claimed_delivery() -> Delivery:
    message = Message.objects.create(
        direction=Message.Direction.OUTBOUND, state=Message.State.DELIVERED, raw=b"x",
        envelope_from="alice@h.example", envelope_to=["doc@partner.example.net"],
    )
    return Delivery.objects.create(
        message=message, recipient="doc@partner.example.net", state=Delivery.State.QUEUED,
        wire=b"wire", claimed_at=timezone.now(),
    )


def test_a_sent_outcome_moves_the_delivery_with_event_and_audit(single: bool, db: None) -> None:
    delivery = _claimed_delivery()
    now = timezone.now()
    sent = egress.Outcome(egress.Result.SENT, "250 2.0.0 OK queued", "2.0.0")
    assert outbound._record(delivery, sent, now) == "sent"
    row = Delivery.objects.get(pk=delivery.pk)
    assert (row.state, row.detail, row.attempts) == (Delivery.State.SENT, sent.detail, 1)
    assert row.sent_at == now and row.first_attempt_at == now and row.updated_at == now
    assert row.claimed_at is None and row.next_attempt_at is None
    assert [(e.state, e.detail) for e in DeliveryEvent.objects.filter(delivery=row)] == [
        (Delivery.State.SENT, sent.detail)
    ]
    assert _audit("hisp.delivery", delivery.pk) == [("delivery.sent", "system", None, {})]


def test_a_lost_lease_records_nothing(single: bool, db: None) -> None:
    delivery = _claimed_delivery()
    # Another worker took the delivery over after our lease expired.
    Delivery.objects.filter(pk=delivery.pk).update(
        claimed_at=delivery.claimed_at + timedelta(minutes=20)
    )
    sent = egress.Outcome(egress.Result.SENT, "250 OK", "2.0.0")
    outbound._record(delivery, sent, timezone.now())
    row = Delivery.objects.get(pk=delivery.pk)
    assert row.state == Delivery.State.QUEUED and row.attempts == 0
    assert not DeliveryEvent.objects.filter(delivery=row).exists()
    assert _audit("hisp.delivery", delivery.pk) == []


TIMELY = "Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\n"


def _received(world, message_id: str) -> Message:
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id=message_id, extra=TIMELY)
    return mail.accept_incoming(
        raw=partner.protect(inner, to=world.alice.address), mail_from=partner.address,
        rcpt_tos=[world.alice.address], peer="127.0.0.1:2525",
    )


def test_a_delivery_writes_every_row_once(world, single: bool) -> None:
    message = _received(world, "<single-1@partner.example.net>")
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.DELIVERED and message.claimed_at is None
    assert message.message_id == "<single-1@partner.example.net>"
    assert message.signer == world.partner.address and message.header_to == [world.alice.address]
    [entry] = MailboxEntry.objects.filter(message=message)
    assert entry.address == world.alice and entry.subject == "Referral"
    assert "Patient summary" in entry.body_text and entry.snippet
    [delivery] = Delivery.objects.filter(message=message)
    assert delivery.state == Delivery.State.DELIVERED
    assert [(e.state, e.detail) for e in delivery.events.all()] == [(Delivery.State.DELIVERED, "")]
    assert _audit("hisp.delivery", delivery.pk) == [
        ("message.delivered", "system", None, {"reason": None, "message": message.pk})
    ]
    reports = Message.objects.filter(original=message, kind=Message.Kind.MDN).order_by("subject")
    assert [r.subject.split(":")[0] for r in reports] == ["Dispatched", "Processed"]
    for report in reports:
        [sent] = report.deliveries.all()
        assert sent.state == Delivery.State.SENT and sent.recipient == world.partner.address
        assert [e.state for e in sent.events.all()] == [Delivery.State.QUEUED, Delivery.State.SENT]
    assert len(world.sink.handler.messages) == 2


def test_a_lost_lease_rolls_the_whole_delivery_back(world, single: bool) -> None:
    message = _received(world, "<single-2@partner.example.net>")
    claimed = mail.claim_message(message.pk, from_state=Message.State.RECEIVED)
    assert claimed is not None and claimed.claimed_at is not None
    # Our lease expired and another worker claimed the message meanwhile.
    later = claimed.claimed_at + timedelta(minutes=30)
    Message.objects.filter(pk=message.pk).update(claimed_at=later)
    with pytest.raises(inbound.LeaseLost):
        inbound._process(claimed)
    message.refresh_from_db()
    assert message.state == Message.State.PROCESSING and message.claimed_at == later
    assert not MailboxEntry.objects.filter(message=message).exists()
    assert not Delivery.objects.filter(message=message).exists()
    assert not Message.objects.filter(original=message).exists()
    assert not DeliveryEvent.objects.exists()
    assert world.sink.handler.messages == []
