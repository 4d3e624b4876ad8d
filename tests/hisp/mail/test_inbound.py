"""Inbound: a partner HISP (openssl) sends to alice; we unprotect, deliver and send MDNs."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

import agent
from hisp import mdn
from hisp.certificates import fingerprint, load
from hisp.models import Certificate, Delivery, MailboxEntry, Message
from hisp.services import inbound, mail
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import Partner, leaf_certificate


def _receive(world, raw: bytes, rcpt: str | None = None) -> Message:
    return mail.accept_incoming(
        raw=raw, mail_from=world.partner.address, rcpt_tos=[rcpt or world.alice.address],
        peer="127.0.0.1:2525",
    )


def _mdns(world) -> list[mdn.Mdn]:
    """The MDNs the partner received, opened with openssl."""
    return [
        mdn.parse(world.partner.open(m.data, our_domain=HOSTED))
        for m in world.sink.handler.messages
    ]


def test_signed_and_encrypted_mail_is_delivered_with_a_processed_mdn(world):
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<m1@partner.example.net>")
    message = _receive(world, partner.protect(inner, to=world.alice.address))
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.DELIVERED
    assert message.message_id == "<m1@partner.example.net>"
    assert message.signer == partner.address
    entry = MailboxEntry.objects.get(address=world.alice, message=message)
    assert entry.subject == "Referral"
    assert "Patient summary" in entry.body_text
    assert Delivery.objects.get(message=message).state == Delivery.State.DELIVERED
    # One processed MDN, signed and encrypted (openssl opened it), no MDN request on it.
    [report] = _mdns(world)
    assert report.disposition == "processed"
    assert report.original_message_id == "<m1@partner.example.net>"
    assert report.final_recipient == world.alice.address
    assert not report.final_delivery
    opened = world.partner.open(world.sink.handler.messages[0].data, our_domain=HOSTED)
    assert b"Disposition-Notification-To" not in opened
    assert world.sink.handler.messages[0].rcpt_tos == [partner.address]


def test_timely_request_gets_processed_and_dispatched_mdns(world):
    partner = world.partner
    inner = partner.inner(
        to=world.alice.address, message_id="<m2@partner.example.net>",
        extra="Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\n",
    )
    _receive(world, partner.protect(inner, to=world.alice.address))
    drain()
    reports = sorted(_mdns(world), key=lambda r: r.disposition)
    assert [r.disposition for r in reports] == ["dispatched", "processed"]
    assert reports[0].final_delivery
    assert not reports[1].final_delivery


def test_malformed_options_get_a_processed_mdn_and_no_final_delivery_field(world):
    partner = world.partner
    inner = partner.inner(
        to=world.alice.address, message_id="<m3@partner.example.net>",
        extra="Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=maybe\n",
    )
    _receive(world, partner.protect(inner, to=world.alice.address))
    drain()
    reports = _mdns(world)
    assert [r.disposition for r in reports] == ["processed"]
    assert not any(r.final_delivery for r in reports)


def test_unencrypted_mail_is_rejected_without_mdn(world):
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<m4@partner.example.net>")
    message = _receive(world, partner.protect(inner, to=world.alice.address, encrypt=False))
    drain()
    message.refresh_from_db()
    assert (message.state, message.reason) == (Message.State.REJECTED, "not-encrypted")
    assert Delivery.objects.get(message=message).detail == "not-encrypted"
    assert not MailboxEntry.objects.exists()
    assert world.sink.handler.messages == []


def test_unsigned_mail_is_rejected_without_mdn(world):
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<m5@partner.example.net>")
    message = _receive(world, partner.protect(inner, to=world.alice.address, sign=False))
    drain()
    message.refresh_from_db()
    assert (message.state, message.reason) == (Message.State.REJECTED, "not-signed")
    assert world.sink.handler.messages == []


def test_signer_outside_our_anchors_is_rejected_without_mdn(world, tmp_path):
    stranger = Partner.create(tmp_path / "stranger", slot="stranger")
    inner = world.partner.inner(to=world.alice.address, message_id="<m6@partner.example.net>")
    message = _receive(world, world.partner.protect(inner, to=world.alice.address, signer=stranger))
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.REJECTED
    assert message.reason == "untrusted-signer"
    assert not MailboxEntry.objects.exists()
    assert world.sink.handler.messages == []


def test_disabled_mailbox_gets_a_failed_mdn(world):
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<m7@partner.example.net>")
    message = _receive(world, partner.protect(inner, to=world.alice.address))
    type(world.alice).objects.filter(pk=world.alice.pk).update(status="disabled")
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.REJECTED
    assert Delivery.objects.get(message=message).detail == "mailbox-disabled"
    assert [r.disposition for r in _mdns(world)] == ["failed"]


def test_processing_twice_delivers_once(world):
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<m8@partner.example.net>")
    message = _receive(world, partner.protect(inner, to=world.alice.address))
    assert inner_state(message) == Message.State.RECEIVED
    assert inbound.process(message.pk).startswith("delivered")
    assert inbound.process(message.pk) == "not-claimed"
    assert MailboxEntry.objects.filter(message=message).count() == 1
    assert Message.objects.filter(kind=Message.Kind.MDN).count() == 1


def inner_state(message: Message) -> str:
    message.refresh_from_db()
    return message.state


def test_expired_claim_is_swept_back_and_processed_once(world, settings):
    from datetime import timedelta

    from django.utils import timezone

    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<m9@partner.example.net>")
    message = _receive(world, partner.protect(inner, to=world.alice.address))
    # A worker claimed it and died.
    Message.objects.filter(pk=message.pk).update(
        state=Message.State.PROCESSING, claimed_at=timezone.now() - timedelta(hours=1)
    )
    counts = mail.sweep()
    assert counts["incoming"] == 1
    assert inner_state(message) == Message.State.RECEIVED
    drain()
    assert inner_state(message) == Message.State.DELIVERED
    assert MailboxEntry.objects.filter(message=message).count() == 1


def test_courtesy_notice_for_unsecured_mail_is_rate_limited_and_encrypted(world, settings):
    from django.core.cache import cache

    cache.clear()
    settings.HISP_COURTESY_NOTICES = True
    partner = world.partner
    for n in range(2):
        inner = partner.inner(to=world.alice.address, message_id=f"<c{n}@partner.example.net>")
        _receive(world, partner.protect(inner, to=world.alice.address, encrypt=False))
    drain()
    [notice] = Message.objects.filter(kind=Message.Kind.NOTICE)
    assert notice.envelope_to == [partner.address]
    [received] = world.sink.handler.messages
    opened = partner.open(received.data, our_domain=HOSTED)
    assert b"must be signed and encrypted" in opened
    assert b"Auto-Submitted: auto-replied" in opened


def test_no_courtesy_notice_for_auto_generated_or_by_default(world, settings):
    from django.core.cache import cache

    cache.clear()
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<d0@partner.example.net>")
    _receive(world, partner.protect(inner, to=world.alice.address, encrypt=False))
    drain()  # off by default
    settings.HISP_COURTESY_NOTICES = True
    inner = partner.inner(to=world.alice.address, message_id="<d1@partner.example.net>",
                          extra="Auto-Submitted: auto-generated\n")
    _receive(world, partner.protect(inner, to=world.alice.address, encrypt=False))
    drain()
    assert not Message.objects.filter(kind=Message.Kind.NOTICE).exists()
    assert world.sink.handler.messages == []


def test_failed_mdn_delivery_produces_no_dsn(world):
    """Never a DSN about an MDN: if the partner refuses our MDN, nobody is notified."""
    world.sink.handler.reply = "550 5.7.1 refused"
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<m10@partner.example.net>")
    _receive(world, partner.protect(inner, to=world.alice.address))
    drain()
    [report] = Message.objects.filter(kind=Message.Kind.MDN)
    assert Delivery.objects.get(message=report).state == Delivery.State.FAILED
    assert not Message.objects.filter(kind=Message.Kind.DSN).exists()
    assert MailboxEntry.objects.filter(address=world.alice).count() == 1  # just the message


def test_sweeper_waits_for_a_transient_retry_to_fall_due(world):
    """A message released for a transient retry keeps its backoff: the sweeper (a backstop for
    lost tasks) re-queues it only after the planned retry time plus the grace period."""
    from datetime import timedelta

    from django.utils import timezone

    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<r1@partner.example.net>")
    message = _receive(world, partner.protect(inner, to=world.alice.address))
    # The fourth transient failure was just recorded: the next try is planned 8 minutes later.
    assert mail.retry_delay(4) == timedelta(minutes=8)
    released = timezone.now() - timedelta(minutes=5)
    Message.objects.filter(pk=message.pk).update(attempts=4, updated_at=released)
    assert mail.sweep()["incoming"] == 0  # past the 2-minute grace, not yet due
    assert inner_state(message) == Message.State.RECEIVED
    Message.objects.filter(pk=message.pk).update(updated_at=released - timedelta(minutes=6))
    assert mail.sweep()["incoming"] == 1  # 11 minutes: due and its task evidently lost
    assert mail.sweep()["incoming"] == 0  # touched: not queued again on the next sweep


def test_sweeper_requeues_a_never_retried_message_after_the_grace_period(world):
    from datetime import timedelta

    from django.utils import timezone

    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<r2@partner.example.net>")
    message = _receive(world, partner.protect(inner, to=world.alice.address))
    assert mail.sweep()["incoming"] == 0
    Message.objects.filter(pk=message.pk).update(
        updated_at=timezone.now() - timedelta(minutes=3)
    )
    assert mail.sweep()["incoming"] == 1


def test_mdn_that_cannot_be_protected_inline_goes_through_the_pipeline(world):
    """The MDN is normally protected in the inbound task; when that fails (here: we stopped
    trusting the partner's CA for outgoing mail) the delivery still commits, and the outbound
    pipeline records why the MDN failed, with no DSN about it (never a report on a report)."""
    from hisp.models import Domain, TrustAnchor

    own_ca = Domain.objects.get(name=HOSTED).issuing_ca
    TrustAnchor.objects.filter(domain__name=HOSTED).exclude(certificate=own_ca).update(
        outgoing=False
    )
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<m11@partner.example.net>")
    message = _receive(world, partner.protect(inner, to=world.alice.address))
    assert inbound.process(message.pk) == "delivered:1"
    [report] = Message.objects.filter(kind=Message.Kind.MDN)
    assert report.state == Message.State.QUEUED
    drain()
    assert inner_state(message) == Message.State.DELIVERED
    report.refresh_from_db()
    assert report.state == Message.State.FAILED
    assert Delivery.objects.get(message=report).detail == "untrusted-recipient"
    assert not Message.objects.filter(kind=Message.Kind.DSN).exists()
    assert world.sink.handler.messages == []


def test_mdn_protected_inline_is_sent_from_the_inbound_task(world):
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<m12@partner.example.net>")
    message = _receive(world, partner.protect(inner, to=world.alice.address))
    assert inbound.process(message.pk) == "delivered:1"
    [report] = Message.objects.filter(kind=Message.Kind.MDN)
    delivery = Delivery.objects.get(message=report)
    assert (report.state, delivery.state, delivery.claimed_at) == (
        Message.State.SENT, Delivery.State.SENT, None)
    assert len(world.sink.handler.messages) == 1


def test_the_same_mailbox_named_twice_is_one_delivery(world):
    # A repeated RCPT, or the same address in another case: the message was answered 250, so
    # it must be delivered, once, with one MDN (a unique-constraint failure used to retry it
    # and finally reject it).
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<twice@partner.example.net>")
    local, _, domain = world.alice.address.partition("@")
    message = mail.accept_incoming(
        raw=partner.protect(inner, to=world.alice.address), mail_from=partner.address,
        rcpt_tos=[world.alice.address, world.alice.address, f"{local}@{domain.upper()}"],
        peer="127.0.0.1:2525",
    )
    assert inbound.process(message.pk) == "delivered:1"
    message.refresh_from_db()
    assert message.state == Message.State.DELIVERED
    assert MailboxEntry.objects.filter(message=message).count() == 1
    assert Delivery.objects.filter(message=message).count() == 1
    drain()
    assert [r.disposition for r in _mdns(world)] == ["processed"]


def test_sweeper_requeues_a_waiting_message_less_often_the_longer_it_waits(world):
    """Under a backlog longer than the grace period the task is most likely still queued:
    each re-queue waits as long as the message had waited before it (capped at 30 minutes),
    so a backlog of hours adds a handful of duplicate tasks per message, not one per sweep."""
    from datetime import timedelta

    from django.utils import timezone

    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<r3@partner.example.net>")
    message = _receive(world, partner.protect(inner, to=world.alice.address))
    now = timezone.now()

    def aged(created: timedelta, touched: timedelta) -> int:
        Message.objects.filter(pk=message.pk).update(
            created_at=now - created, updated_at=now - touched
        )
        return mail.sweep()["incoming"]

    # Re-queued 20 minutes after it arrived; 19 minutes since then: not yet.
    assert aged(timedelta(minutes=39), timedelta(minutes=19)) == 0
    assert aged(timedelta(minutes=41), timedelta(minutes=21)) == 1
    # Re-queued 3 hours after arriving: the wait is capped at 30 minutes.
    assert aged(timedelta(hours=3, minutes=29), timedelta(minutes=29)) == 0
    assert aged(timedelta(hours=3, minutes=31), timedelta(minutes=31)) == 1


def test_a_delivered_message_records_who_signed_it_and_the_anchor_that_vouched(world):
    partner = world.partner
    partner.cert = leaf_certificate(partner.ca, partner.ca_key, partner.key, partner.address,
                                    organisation="Partner Clinic LLC")
    partner.cert_file.write_bytes(partner.cert.public_bytes(serialization.Encoding.PEM))
    inner = partner.inner(to=world.alice.address, message_id="<m-who@partner.example.net>")
    message = _receive(world, partner.protect(inner, to=world.alice.address))
    drain()
    message.refresh_from_db()
    assert message.state == Message.State.DELIVERED
    assert message.signer_organisation == "Partner Clinic LLC"
    assert message.signer_fingerprint == fingerprint(partner.cert)
    assert message.anchor is not None
    assert message.anchor.fingerprint_sha256 == fingerprint(partner.ca)


def test_the_anchor_is_recorded_only_when_every_delivered_recipient_used_the_same_one(world):
    first, second = Certificate.objects.filter(binding=Certificate.Binding.CA)[:2]
    outcomes = [inbound._Outcome(a.address, a, Delivery.State.DELIVERED, "")
                for a in (world.alice, world.bob)]

    def result(*anchors: Certificate) -> agent.Unprotected:
        return agent.Unprotected(
            message=b"", sender="", signer=world.partner.cert, chain=(), digest="",
            delivered={o.address.address: load(a) for o, a in zip(outcomes, anchors, strict=True)},
            rejected={},
        )

    assert inbound._anchor_id(result(first, first), outcomes) == first.pk
    assert inbound._anchor_id(result(first, second), outcomes) is None
    assert inbound._anchor_id(result(first, first), []) is None
