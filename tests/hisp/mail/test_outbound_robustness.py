"""Outbound robustness: reports leave with the null reverse-path, an address egress cannot write
fails once with one DSN, a non-ASCII recipient is refused at submission, a transient
protection failure is waited out like an SMTP 4xx, and our own unexpected errors (bugs) are
retried on budgets of their own before failing with one DSN."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from hisp import dsn, egress
from hisp.models import Delivery, DeliveryEvent, MailboxEntry, Message
from hisp.services import compose, mail, notices, outbound, pki
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, Partner, leaf_certificate

UMLAUT = f"jörg@{PARTNER}"


def _send(world, *, to: list[str]) -> Message:
    raw = compose.build_message(
        sender=world.alice.address, to=to, subject="Referral", body_text="Please see.",
        delivery_notification=False,
    )
    return compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")


def _receive(world, *, message_id: str, encrypt: bool = True) -> Message:
    partner = world.partner
    raw = partner.inner(to=world.alice.address, message_id=message_id)
    return mail.accept_incoming(
        raw=partner.protect(raw, to=world.alice.address, encrypt=encrypt),
        mail_from=partner.address, rcpt_tos=[world.alice.address], peer="partner",
    )


def _alice_dsns(world) -> list[dsn.Dsn]:
    entries = MailboxEntry.objects.filter(
        address=world.alice, message__kind=Message.Kind.DSN
    ).order_by("id")
    return [dsn.parse(bytes(e.message.raw)) for e in entries]


def _closed_port_url(path: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def _certificate_with_unreachable_crl(partner: Partner, address: str) -> bytes:
    """A certificate for ``address`` from the partner's CA whose CRL nobody serves."""
    cert = leaf_certificate(partner.ca, partner.ca_key, partner.key, address,
                            crl_url=_closed_port_url("/partner.crl"))
    return cert.public_bytes(serialization.Encoding.PEM)


# 1. Reports and notices: MAIL FROM:<> (RFC 3798 section 3, RFC 3834 section 3.3).


def test_mdn_leaves_with_a_null_reverse_path(world):
    _receive(world, message_id="<n1@partner.example.net>")
    drain()
    [received] = world.sink.handler.messages
    assert received.mail_from == "<>"
    assert received.rcpt_tos == [world.partner.address]
    # The row keeps the reporter: its key signs the MDN, and the UI shows it.
    [report] = Message.objects.filter(kind=Message.Kind.MDN)
    assert report.envelope_from == report.header_from == world.alice.address


def test_courtesy_notice_leaves_with_a_null_reverse_path(world, settings):
    cache.clear()
    settings.HISP_COURTESY_NOTICES = True
    _receive(world, message_id="<n2@partner.example.net>", encrypt=False)
    drain()
    assert Message.objects.filter(kind=Message.Kind.NOTICE).count() == 1
    [received] = world.sink.handler.messages
    assert received.mail_from == "<>"


def test_regular_mail_keeps_its_sender_as_reverse_path(world):
    _send(world, to=[world.partner.address])
    drain()
    [received] = world.sink.handler.messages
    assert received.mail_from == world.alice.address


def test_mdn_to_a_hosted_sender_enters_inbound_with_a_null_reverse_path(world):
    message = _send(world, to=[world.bob.address])
    drain()
    local = Message.objects.filter(direction=Message.Direction.INBOUND, peer="local")
    assert sorted(local.values_list("envelope_from", flat=True)) == ["", world.alice.address]
    # Tracking still matched bob's MDN (it goes by the signed report, not the envelope).
    delivery = Delivery.objects.get(message=message)
    assert delivery.processed_at is not None


# 2. An address egress cannot even write: one permanent failure, one DSN, then quiet.


def test_non_ascii_recipient_fails_once_with_one_dsn(world):
    message = _send(world, to=[world.partner.address])
    drain()
    sent = Delivery.objects.get(message=message)
    bad = Delivery.objects.create(
        message=message, recipient=UMLAUT, state=Delivery.State.QUEUED, wire=sent.wire
    )
    assert outbound.deliver(bad.pk) == "failed"
    bad.refresh_from_db()
    assert (bad.state, bad.attempts, bad.claimed_at) == (Delivery.State.FAILED, 1, None)
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.3.0"
    assert "plain ASCII" in report.recipients[0].diagnostic
    # Nothing left to do: no task, no sweep, no second DSN.
    assert outbound.deliver(bad.pk) == "not-claimed"
    assert mail.sweep()["deliveries"] == 0
    assert len(_alice_dsns(world)) == 1
    assert len(world.sink.handler.messages) == 1


def test_non_ascii_recipient_does_not_fail_its_companions(world):
    world.sink.handler.reply = "451 4.3.0 try again later"
    message = _send(world, to=[world.partner.address])
    drain()
    doc = Delivery.objects.get(message=message)
    assert doc.state == Delivery.State.DEFERRED
    Message.objects.filter(pk=message.pk).update(envelope_to=[world.partner.address, UMLAUT])
    bad = Delivery.objects.create(
        message=message, recipient=UMLAUT, state=Delivery.State.QUEUED, wire=doc.wire
    )
    world.sink.handler.reply = "250 OK"
    Delivery.objects.filter(pk=doc.pk).update(next_attempt_at=None)
    assert outbound.deliver(bad.pk) == "failed"  # doc went along as its companion
    doc.refresh_from_db()
    assert doc.state == Delivery.State.SENT
    [received] = world.sink.handler.messages
    assert received.rcpt_tos == [world.partner.address]
    bad.refresh_from_db()
    assert bad.state == Delivery.State.FAILED
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.3.0"


# 3. Submission refuses what Direct cannot carry.


def test_submit_refuses_a_non_ascii_envelope_recipient(alice):
    raw = compose.build_message(sender=alice.address, to=["doc@partner.example.net"],
                                subject="Hi", body_text="Hello")
    with pytest.raises(compose.SubmissionError, match="must be plain ASCII"):
        compose.submit(address=alice, raw=raw, actor="test", peer="test",
                       recipients=["doc@partner.example.net", UMLAUT])
    assert not Message.objects.exists()


@pytest.mark.parametrize("rcpt", ['"doc\x01x"@partner.example.net', "doc\t@partner.example.net"])
def test_submit_refuses_a_recipient_with_a_control_character(alice, rcpt):
    """It would go out in RCPT TO as it is (smtplib refuses only line ends)."""
    raw = compose.build_message(sender=alice.address, to=["doc@partner.example.net"],
                                subject="Hi", body_text="Hello")
    with pytest.raises(compose.SubmissionError, match="control character"):
        compose.submit(address=alice, raw=raw, actor="test", peer="test", recipients=[rcpt])
    assert not Message.objects.exists()


def test_submit_refuses_a_non_ascii_header_recipient(alice):
    raw = (
        f"From: {alice.address}\r\nTo: {UMLAUT}\r\nSubject: Hi\r\n\r\nHello\r\n"
    ).encode()
    with pytest.raises(compose.SubmissionError):
        compose.submit(address=alice, raw=raw, actor="test", peer="test")
    assert not Message.objects.exists()


# 4. A transient protection failure waits as long as an SMTP 4xx would.


def test_transient_protection_failure_is_retried_for_the_retry_period(world, settings):
    settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS = True  # the CRL URL is on loopback
    ann = f"ann@{PARTNER}"
    pki.import_certificate(_certificate_with_unreachable_crl(world.partner, ann))
    message = _send(world, to=[world.partner.address, ann])
    assert outbound.process(message.pk) == "retry"
    # The recipient that could be protected does not wait for the other.
    doc = Delivery.objects.get(message=message, recipient=world.partner.address)
    assert doc.state == Delivery.State.SENT
    waiting = Delivery.objects.get(message=message, recipient=ann)
    assert (waiting.state, waiting.wire) == (Delivery.State.QUEUED, None)
    # Well past the old five attempts, still inside the retry period: still retried.
    Message.objects.filter(pk=message.pk).update(attempts=9)
    assert outbound.process(message.pk) == "retry"
    message.refresh_from_db()
    assert (message.state, message.attempts) == (Message.State.QUEUED, 10)
    assert mail.retry_delay(message.attempts) == mail.retry_delay(mail.MAX_RETRY_ATTEMPTS)
    assert _alice_dsns(world) == []
    # The period is over: the waiting recipient fails with one DSN; the message was sent.
    settings.HISP_RETRY_PERIOD = timedelta(0)
    assert outbound.process(message.pk) == "protected:1/1"
    message.refresh_from_db()
    assert message.state == Message.State.SENT
    waiting.refresh_from_db()
    assert (waiting.state, waiting.detail) == (Delivery.State.FAILED, "revocation-unavailable")
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.4.7"
    assert outbound.process(message.pk) == "not-claimed"
    assert len(_alice_dsns(world)) == 1
    assert len(world.sink.handler.messages) == 1


# 5. Our own bugs. Nothing real makes these paths run (every error a real component can raise
# is handled before them), so a monkeypatched function that raises RuntimeError stands in for
# the bug; everything else is real.


def _bug(*args: object, **kwargs: object) -> None:
    raise RuntimeError("a bug")


def test_unexpected_error_in_egress_is_retried_then_fails_with_one_dsn(
    world, settings, monkeypatch
):
    message = _send(world, to=[world.partner.address])
    monkeypatch.setattr(egress, "send_batch", _bug)
    before = timezone.now()
    assert outbound.process(message.pk) == "protected:1/1"  # delivered in the same task
    delivery = Delivery.objects.get(message=message)
    detail = "not sent: this HISP failed while sending it (RuntimeError)"
    # Whether the remote had the message when the error came is unknown: neither a DSN nor
    # an immediate resend, but the usual retry schedule.
    assert (delivery.state, delivery.detail, delivery.attempts, delivery.claimed_at) == (
        Delivery.State.DEFERRED, detail, 1, None
    )
    assert before + outbound.backoff(1) <= delivery.next_attempt_at
    assert delivery.next_attempt_at <= timezone.now() + outbound.backoff(1)
    assert list(delivery.events.values_list("state", "detail"))[-1:] == [
        (Delivery.State.DEFERRED, detail)
    ]
    assert _alice_dsns(world) == []
    # Not due yet: the queued task leaves it alone.
    assert outbound.deliver(delivery.pk, only_due=True) == "not-claimed"
    # Due, still inside the retry period: deferred again, with a longer backoff.
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert outbound.deliver(delivery.pk, only_due=True) == "deferred"
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == (Delivery.State.DEFERRED, 2)
    assert delivery.next_attempt_at > timezone.now() + outbound.backoff(1)
    assert _alice_dsns(world) == []
    # The retry period is over: failed, with exactly one DSN.
    settings.HISP_RETRY_PERIOD = timedelta(0)
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert outbound.deliver(delivery.pk, only_due=True) == "failed"
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == (Delivery.State.FAILED, 3)
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == notices.EXPIRED
    assert "failed while sending it (RuntimeError)" in report.recipients[0].diagnostic
    # Our own failure, not the destination's: the sender is not told the partner refused.
    [entry] = MailboxEntry.objects.filter(address=world.alice, message__kind=Message.Kind.DSN)
    explanation = " ".join(entry.body_text.split())
    assert (
        "it could not be sent for 0 seconds; last attempt: this HISP failed while sending it "
        "(RuntimeError)"
    ) in explanation
    assert "destination" not in explanation
    assert outbound.deliver(delivery.pk) == "not-claimed"
    assert mail.sweep()["deliveries"] == 0
    assert len(_alice_dsns(world)) == 1
    assert world.sink.handler.messages == []


def _waiting_out_a_transient_failure(world, settings) -> tuple[Message, Delivery]:
    """A message to doc (sent at once) and ann (whose CRL nobody serves: waiting), after
    many transient rounds."""
    settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS = True  # the CRL URL is on loopback
    ann = f"ann@{PARTNER}"
    pki.import_certificate(_certificate_with_unreachable_crl(world.partner, ann))
    message = _send(world, to=[world.partner.address, ann])
    assert outbound.process(message.pk) == "retry"
    Message.objects.filter(pk=message.pk).update(attempts=9)
    return message, Delivery.objects.get(message=message, recipient=ann)


def test_internal_error_has_its_own_budget_after_many_transient_rounds(
    world, settings, monkeypatch
):
    message, waiting = _waiting_out_a_transient_failure(world, settings)
    monkeypatch.setattr(outbound, "_protect", _bug)
    for errors in range(1, outbound.MAX_INTERNAL_ERRORS):
        assert outbound.process(message.pk) == "retry"
        message.refresh_from_db()
        assert (message.state, message.attempts) == (Message.State.QUEUED, 9 + errors)
        waiting.refresh_from_db()
        assert (waiting.state, waiting.wire) == (Delivery.State.QUEUED, None)
        events = waiting.events.filter(detail=outbound.INTERNAL_ERROR)
        assert events.count() == errors
        assert _alice_dsns(world) == []
    # The budget is spent: the waiting recipient fails with one DSN; doc's delivery stands.
    assert outbound.process(message.pk) == "failed"
    message.refresh_from_db()
    assert (message.state, message.reason) == (Message.State.SENT, "")
    waiting.refresh_from_db()
    assert (waiting.state, waiting.detail) == (Delivery.State.FAILED, "internal-error")
    doc = Delivery.objects.get(message=message, recipient=world.partner.address)
    assert doc.state == Delivery.State.SENT
    [report] = _alice_dsns(world)
    assert report.recipients[0].final_recipient.endswith(waiting.recipient)
    assert report.recipients[0].status == "5.3.0"
    assert outbound.process(message.pk) == "not-claimed"
    assert len(_alice_dsns(world)) == 1
    assert len(world.sink.handler.messages) == 1  # doc's copy only


def _retries_queued(pk: int) -> list[datetime]:
    """When the process_outgoing tasks for message ``pk`` in the broker's queue (the
    filesystem transport the tests use) are due, in the order they were published."""
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    due = []
    for path in sorted(folder.glob("*.msg"), key=lambda p: p.stat().st_mtime_ns):
        headers = json.loads(path.read_bytes())["headers"]
        if headers["task"] == "hisp.mail.process_outgoing" and headers["argsrepr"] == f"({pk},)":
            due.append(datetime.fromisoformat(headers["eta"]))
    return due


def test_internal_error_retry_is_paced_by_its_own_count(
    world, settings, monkeypatch, django_capture_on_commit_callbacks
):
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("reads the queue of the filesystem broker")
    message, _ = _waiting_out_a_transient_failure(world, settings)
    monkeypatch.setattr(outbound, "_protect", _bug)
    before = timezone.now()
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):  # publishes to the broker
            assert outbound.process(message.pk) == "retry"
    waits = [round((due - before).total_seconds() / 60) for due in _retries_queued(message.pk)]
    # 1 and 2 minutes, not the 128 minutes of the rounds that wait out a transient failure.
    assert waits == [1, 2]


def test_internal_error_fails_a_message_with_no_recipient_left_alive(world, monkeypatch):
    message = _send(world, to=[world.partner.address])
    monkeypatch.setattr(outbound, "_protect", _bug)
    for _ in range(outbound.MAX_INTERNAL_ERRORS - 1):
        assert outbound.process(message.pk) == "retry"
    assert outbound.process(message.pk) == "failed"
    message.refresh_from_db()
    assert (message.state, message.reason) == (Message.State.FAILED, "internal-error")
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.3.0"
    assert DeliveryEvent.objects.filter(detail=outbound.INTERNAL_ERROR).count() == 4
    assert world.sink.handler.messages == []


@pytest.mark.parametrize("reply", ["250 2.0.0 queued\x00as 42\x1b[31m", "451 4.3.0 try\x00later"])
def test_a_reply_with_control_characters_is_recorded_once(world, reply):
    """A remote's reply text goes into the delivery's history: a NUL (PostgreSQL text refuses
    it) must not make the record fail after the send, which would leave the delivery claimed
    and send the same message again after every lease."""
    world.sink.handler.reply = reply
    message = _send(world, to=[world.partner.address])
    drain()
    [delivery] = Delivery.objects.filter(message=message)
    expected = Delivery.State.SENT if reply.startswith("250") else Delivery.State.DEFERRED
    assert delivery.state == expected and delivery.claimed_at is None
    assert "\x00" not in delivery.detail and "\x1b" not in delivery.detail
    assert "queued" in delivery.detail or "try" in delivery.detail
    assert len(world.sink.handler.messages) == (1 if expected == Delivery.State.SENT else 0)


def test_control_characters_in_received_mail_do_not_stop_its_delivery(world):
    """A NUL in a subject or text body (malformed, RFC 5322 section 2.2, yet seen from broken
    senders) must not turn into a database error and a rejection after five attempts: the
    message is delivered, the summary shows U+FFFD, and the stored content keeps every byte.
    (Sent by a hosted sender through our own agent: openssl's S/MIME text mode cuts lines at
    a NUL, so the partner could not send these bytes intact.)"""
    raw = compose.build_message(
        sender=world.alice.address, to=[world.alice.address], subject="lab result",
        body_text="value 7.2", delivery_notification=False,
    )
    raw = raw.replace(b"lab result", b"lab\x00result", 1).replace(b"value 7.2", b"value\x00 7.2")
    assert raw.count(b"\x00") == 2
    compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    drain()
    [message] = Message.objects.filter(
        direction=Message.Direction.INBOUND, kind=Message.Kind.REGULAR
    )
    assert message.state == Message.State.DELIVERED, message.reason
    entry = MailboxEntry.objects.get(message=message)
    assert entry.subject == "lab\ufffdresult" and message.subject == "lab\ufffdresult"
    assert "\x00" not in entry.body_text and "value\ufffd 7.2" in entry.body_text
    assert b"value\x00 7.2" in bytes(message.content)


def test_a_long_text_of_distinct_words_is_filed_and_searchable(world):
    """About 40,000 distinct words make a tsvector over PostgreSQL's 1 MB limit: indexed whole,
    the mailbox entry would be refused and the message never filed (rejected after five
    attempts; the sender's own Sent copy refused at submission). The body's first
    SEARCH_CHARS characters are searchable; the rest is kept and shown, not indexed."""
    from webmail.search import SEARCH_CHARS, filter_entries

    words = [f"w{i:x}z{(i * 7919) % 100003:x}" for i in range(120_000)]
    body = "Findable opening paragraph.\n" + " ".join(words) + "\nlastwordbeyondthelimit\n"
    assert len(body) > 1_000_000 >= 10 * SEARCH_CHARS
    raw = compose.build_message(
        sender=world.alice.address, to=[world.alice.address], subject="Long result",
        body_text=body, delivery_notification=False,
    )
    compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    drain()
    [message] = Message.objects.filter(
        direction=Message.Direction.INBOUND, kind=Message.Kind.REGULAR
    )
    assert message.state == Message.State.DELIVERED, message.reason
    entries = MailboxEntry.objects.filter(address=world.alice)
    assert set(entries.values_list("folder", flat=True)) >= {"inbox", "sent"}
    assert entries.get(folder="inbox").body_text.rstrip().endswith("lastwordbeyondthelimit")
    found = filter_entries(entries, "findable")
    assert {e.folder for e in found} == {"inbox", "sent"}
    assert not filter_entries(entries, "lastwordbeyondthelimit").exists()
