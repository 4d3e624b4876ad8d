"""A failure report (MDN or DSN) or an MDN timeout never fails a delivery under a worker that
holds its claim: the worker may be in the SMTP transaction that hands the message over, and
its outcome is the one to record. Before, ``tracking.fail`` released the claim under the
worker: the sender was told the message failed while it reached the partner, and the worker's
"sent" was lost. A claim whose lease ran out is a dead worker's and does not hold a report up;
``sent`` and ``processed`` deliveries (no worker has them) still fail on a report or timeout."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hisp import egress
from hisp.models import Delivery, Message
from hisp.services import outbound, tracking
from tests.hisp.mail.test_report_tracking import (
    _alice_dsns,
    _from_partner,
    _mdn,
    _send,
    _state,
)


def _claimed_for_a_retry(world, message: Message, *, at) -> Delivery:
    """The partner's delivery as a worker retrying it holds it: deferred, claimed at ``at``."""
    delivery = Delivery.objects.get(message=message, recipient=world.partner.address)
    Delivery.objects.filter(pk=delivery.pk).update(
        state=Delivery.State.DEFERRED, claimed_at=at, sent_at=None
    )
    delivery.refresh_from_db()
    return delivery


def test_a_failed_mdn_waits_for_the_worker_that_is_delivering_and_the_send_is_kept(world):
    message = _send(world)
    worker = _claimed_for_a_retry(world, message, at=timezone.now())
    before = len(_alice_dsns(world))
    _from_partner(world, _mdn(world, message.message_id, "failed"))
    current = Delivery.objects.get(pk=worker.pk)
    assert current.state == Delivery.State.DEFERRED and current.claimed_at == worker.claimed_at
    assert len(_alice_dsns(world)) == before
    # The worker's SMTP transaction ends: its "sent" is recorded, not lost.
    sent = egress.Outcome(egress.Result.SENT, "250 2.0.0 queued", "2.0.0")
    assert outbound._record(worker, sent, timezone.now()) == "sent"
    assert _state(world, message) == Delivery.State.SENT


def test_a_failed_mdn_fails_a_delivery_whose_claim_expired(world, settings):
    message = _send(world)
    dead = timezone.now() - settings.HISP_CLAIM_LEASE - timedelta(seconds=5)
    _claimed_for_a_retry(world, message, at=dead)
    before = len(_alice_dsns(world))
    _from_partner(world, _mdn(world, message.message_id, "failed"))
    assert _state(world, message) == Delivery.State.FAILED
    assert len(_alice_dsns(world)) == before + 1


def test_a_failed_mdn_still_fails_a_sent_delivery(world):
    message = _send(world)
    assert _state(world, message) == Delivery.State.SENT
    _from_partner(world, _mdn(world, message.message_id, "failed"))
    assert _state(world, message) == Delivery.State.FAILED


def test_an_mdn_timeout_still_fails_a_sent_delivery_with_one_dsn(world, settings):
    message = _send(world)
    before = len(_alice_dsns(world))
    later = timezone.now() + settings.HISP_MDN_PROCESSED_TIMEOUT + timedelta(minutes=1)
    assert tracking.expire_overdue(later) == 1
    assert tracking.expire_overdue(later) == 0
    assert _state(world, message) == Delivery.State.FAILED
    assert len(_alice_dsns(world)) == before + 1


def test_a_worker_holding_the_claim_may_fail_the_delivery_itself(world):
    message = _send(world)
    worker = _claimed_for_a_retry(world, message, at=timezone.now())
    refused = egress.Outcome(egress.Result.PERMANENT, "550 5.1.1 no such user", "5.1.1")
    assert outbound._record(worker, refused, timezone.now()) == "failed"
    assert _state(world, message) == Delivery.State.FAILED


def test_a_processed_mdn_during_a_retry_is_not_undone_by_the_workers_outcome(world, settings):
    # The attempt before reached the partner although we never saw its reply; the retry is in
    # flight when the partner's processed MDN arrives. The MDN proves the message arrived.
    message = _send(world)
    worker = _claimed_for_a_retry(world, message, at=timezone.now())
    _from_partner(world, _mdn(world, message.message_id, "processed"))
    assert _state(world, message) == Delivery.State.PROCESSED
    sent = egress.Outcome(egress.Result.SENT, "250 2.0.0 queued", "2.0.0")
    outbound._record(worker, sent, timezone.now())
    assert _state(world, message) == Delivery.State.PROCESSED
    later = timezone.now() + settings.HISP_MDN_PROCESSED_TIMEOUT + timedelta(minutes=1)
    assert tracking.expire_overdue(later) == 0
    assert _state(world, message) == Delivery.State.PROCESSED


def test_the_mdn_timeout_sweep_reads_no_protected_bytes(world, settings):
    # A backlog of overdue deliveries is thousands of rows: each used to come with its wire
    # message and its message's verified content, all in memory at once.
    messages = [_send(world) for _ in range(3)]
    later = timezone.now() + settings.HISP_MDN_PROCESSED_TIMEOUT + timedelta(minutes=1)
    with CaptureQueriesContext(connection) as queries:
        assert tracking.expire_overdue(later) == 3
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    assert selects
    assert not [sql for sql in selects if '"hisp_delivery"."wire"' in sql]
    assert not [sql for sql in selects if '"hisp_message"."content"' in sql]
    assert {_state(world, m) for m in messages} == {Delivery.State.FAILED}
