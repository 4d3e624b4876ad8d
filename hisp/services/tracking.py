"""Delivery tracking (Implementation Guide for Delivery Notification in Direct 1.0).

Per outbound recipient: ``sent`` -> ``processed`` (processed MDN) -> ``dispatched`` (dispatched
MDN), or ``failed`` (failed MDN, failure DSN, or no MDN in time). Each transition is a conditional
UPDATE from the states it may leave, made in the same transaction as the notice it causes, so a
late or repeated MDN changes nothing and notifies nobody.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

import agent
from hisp import dsn, mdn
from hisp.models import Delivery, DeliveryEvent, Message
from hisp.reports import ReportError
from hisp.services import audit, notices
from hisp.services.mail import claim_lease, finish_message

log = logging.getLogger(__name__)

OPEN = (Delivery.State.QUEUED, Delivery.State.DEFERRED, Delivery.State.SENT)
NOT_FINAL = (*OPEN, Delivery.State.PROCESSED, Delivery.State.PENDING_CERTIFICATE)
DIAGNOSTIC_LIMIT = 2000  # characters of a partner's Diagnostic-Code we quote to our sender


def in_flight(delivery: Delivery) -> bool:
    """Whether a worker holds the delivery's claim now: it may be in an SMTP transaction with
    the partner, and the outcome is the worker's to record. A claim whose lease ran out is a
    worker that died (the sweeper gives the delivery back). ``_move(unclaimed=True)`` applies
    the same rule inside its UPDATE."""
    return delivery.claimed_at is not None and delivery.claimed_at >= timezone.now() - claim_lease()


def _move(
    delivery: Delivery,
    *,
    to: str,
    leaving: tuple[str, ...],
    detail: str = "",
    unclaimed: bool = False,
    **fields: object,
) -> bool:
    now = timezone.now()
    rows = Delivery.objects.filter(pk=delivery.pk, state__in=leaving)
    if unclaimed:
        # In the same UPDATE as the move, so a worker's claim (a conditional UPDATE of the
        # same row) and this move exclude each other whichever comes first.
        rows = rows.filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - claim_lease()))
    moved = rows.update(state=to, detail=detail[:500], updated_at=now, **fields)
    if moved:
        DeliveryEvent.objects.create(delivery=delivery, state=to, detail=detail[:500])
        delivery.state = to
    return bool(moved)


# A remote server's reply as egress records it: "550 5.1.1 No such user".
_SMTP_REPLY = re.compile(r"[245][0-9][0-9][ -]")


def _diagnostic(detail: str) -> str:
    """The DSN's Diagnostic-Code for ``detail`` (RFC 3464 2.3.6): an SMTP reply is of type
    "smtp"; our own reasons (agent codes, timeouts) of the private type "x-direct"."""
    kind = "smtp" if _SMTP_REPLY.match(detail) else "x-direct"
    return f"{kind}; {detail}"


def fail(
    delivery: Delivery,
    *,
    detail: str,
    status: str,
    why: str,
    diagnostic: str | None = None,
    remote_mta: str | None = None,
    last_attempt: datetime | None = None,
    unless_in_flight: bool = False,
) -> bool:
    """Fail a delivery that is not final yet and file exactly one failure DSN for it
    (``diagnostic``: a Diagnostic-Code to pass on as it is, else one made from ``detail``;
    ``remote_mta`` and ``last_attempt``: the server that answered our last attempt, and when).

    ``unless_in_flight``: the caller holds no claim on the delivery (a report, a timeout). A
    delivery a worker holds a live claim on is then left to that worker (False): it may be in
    the SMTP transaction that hands the message over, and failing now would release its claim
    and lose its outcome, telling the sender "failed" about a message the partner has. The
    worker records what happened; a delivery it sends is failed later by a failure report or
    the MDN timeout if it must be. A claim whose lease ran out is a dead worker's, no hold."""
    if not _move(
        delivery,
        to=Delivery.State.FAILED,
        leaving=NOT_FINAL,
        detail=detail,
        unclaimed=unless_in_flight,
        claimed_at=None,
        next_attempt_at=None,
    ):
        return False
    notices.file_failure(
        delivery,
        status=status,
        diagnostic=diagnostic or _diagnostic(detail),
        why=why,
        remote_mta=remote_mta,
        last_attempt=last_attempt,
    )
    audit.record(action="delivery.failed", obj=delivery, actor="system", reason=detail[:100])
    return True


# A positive MDN proves the message arrived, even while a worker retries it (an earlier attempt
# got through though its reply was lost): the claim is released with the move, so that worker's
# outcome finds its lease gone and cannot set the delivery back to sent or deferred (and the MDN
# timeout then fail a delivery whose MDN came).
def processed(delivery: Delivery, *, at: datetime) -> bool:
    return _move(
        delivery,
        to=Delivery.State.PROCESSED,
        leaving=OPEN,
        detail="processed MDN",
        processed_at=at,
        claimed_at=None,
        next_attempt_at=None,
    )


def dispatched(delivery: Delivery, *, at: datetime, final_delivery: bool) -> bool:
    if delivery.timely and not final_delivery:
        # Timely delivery was asked for: only a dispatched MDN carrying the extension field
        # confirms final delivery (IG for Delivery Notification section 3.3). This one still
        # proves the recipient's HISP processed the message: without a processed MDN before
        # it, the processed timeout would tell the sender that no notification came at all.
        return processed(delivery, at=at)
    moved = _move(
        delivery,
        to=Delivery.State.DISPATCHED,
        leaving=(*OPEN, Delivery.State.PROCESSED),
        detail="dispatched MDN",
        dispatched_at=at,
        claimed_at=None,  # as processed() above
        next_attempt_at=None,
    )
    if moved and delivery.timely:
        notices.file_delivered_notice(delivery)
    return moved


_ANGLED = re.compile(r"<([^<>]*)>")


def _message_id_forms(quoted: str) -> list[str]:
    """The spellings of the Message-ID a report quotes that we may have stored: implementations
    quote it with or without its angle brackets, inside double quotes, or followed by a
    comment; we store it as the message gave it (ours, and nearly every client's, in angle
    brackets, RFC 5322 3.6.4)."""
    found = _ANGLED.search(quoted)
    core = (found.group(1) if found else quoted.strip().strip('"')).strip()
    return [f"<{core}>", core] if core else []


def _deliveries(original_message_id: str, reporter: str, names: list[str | None]) -> list[Delivery]:
    """Our outbound deliveries to ``names`` (in any case) of the message a report quotes, among
    those to the reporter's own domain: the report must come from the recipient's domain (its
    signer is bound to it, checked by the agent), so nobody can fail or confirm deliveries to
    other people. A query for the message and one per thousand names, however many recipient
    blocks a DSN carries. The protected and submitted bytes stay in the database (read only if
    a failure DSN quotes the headers)."""
    domain = reporter.rpartition("@")[2].lower()
    wanted = sorted(
        {name.lower() for name in names if name and name.rpartition("@")[2].lower() == domain}
    )
    if not wanted:
        return []
    message = (
        Message.objects.filter(
            direction=Message.Direction.OUTBOUND,
            kind=Message.Kind.REGULAR,
            message_id__in=_message_id_forms(original_message_id),
        )
        .defer("raw", "content")
        .order_by("-id")
        .first()
    )
    if message is None:
        return []
    found: list[Delivery] = []
    for i in range(0, len(wanted), 1000):
        found += (
            Delivery.objects.filter(message=message)
            .annotate(lowered=Lower("recipient"))
            .filter(lowered__in=wanted[i : i + 1000])
            .defer("wire")
        )
    for delivery in found:
        delivery.message = message
    return found


def _pick(deliveries: list[Delivery], names: list[str | None]) -> Delivery | None:
    """The delivery to the first of ``names`` (in any case) that has one."""
    by_recipient = {d.recipient.lower(): d for d in deliveries}
    for name in names:
        if name and (delivery := by_recipient.get(name.lower())) is not None:
            return delivery
    return None


def handle_report(
    message: Message, result: agent.Unprotected, kind: str, *, facts: dict[str, object]
) -> str:
    """An MDN or DSN arrived for one of our users: update tracking, show no inbox mail.
    ``facts``: the report's own header fields and signer, for the message log."""
    now = timezone.now()
    original: Message | None = None
    with transaction.atomic():
        try:
            if kind == "disposition-notification":
                outcome, original = _apply_mdn(mdn.parse(result.message), result.sender, now)
                report_kind = Message.Kind.MDN
            else:
                outcome, original = _apply_dsn(dsn.parse(result.message), result.sender)
                report_kind = Message.Kind.DSN
        except ReportError as exc:
            log.info("message %s: malformed report (%s)", message.pk, exc)
            outcome, report_kind = "malformed", Message.Kind.REGULAR
        Message.objects.filter(pk=message.pk).update(kind=report_kind, original=original)
        if not finish_message(
            message,
            state=Message.State.DELIVERED if outcome != "malformed" else Message.State.REJECTED,
            reason="" if outcome in ("applied", "unchanged") else f"report-{outcome}",
            content=result.message,
            **facts,
        ):
            transaction.set_rollback(True)
            return "lease-lost"
    return f"report:{outcome}"


def _apply_mdn(report: mdn.Mdn, reporter: str, now: datetime) -> tuple[str, Message | None]:
    names = [report.final_recipient, report.original_recipient]
    delivery = _pick(_deliveries(report.original_message_id, reporter, names), names)
    if delivery is None:
        return "unmatched", None
    if report.is_failure:
        changed = fail(
            delivery,
            detail=f"failed MDN: {report.failure or report.disposition}"[:200],
            status="5.0.0",
            why="the recipient's HISP reported that it could not deliver the message",
            unless_in_flight=True,
        )
    elif report.disposition == "dispatched":
        changed = dispatched(delivery, at=now, final_delivery=report.final_delivery)
    else:
        # processed, or a later word from the recipient's side (displayed, deleted, denied:
        # RFC 3798 3.2.6.2) that proves the message arrived all the same. Ignored when no
        # processed MDN came first, the MDN timeout would fail a message that was delivered.
        changed = processed(delivery, at=now)
    return ("applied" if changed else "unchanged"), delivery.message


def _apply_dsn(report: dsn.Dsn, reporter: str) -> tuple[str, Message | None]:
    if not report.original_message_id:
        return "unmatched", None
    deliveries = _deliveries(
        report.original_message_id,
        reporter,
        [name for r in report.recipients for name in (r.final_recipient, r.original_recipient)],
    )
    applied, original = False, None
    done: set[int] = set()
    for status in report.recipients:
        delivery = _pick(deliveries, [status.final_recipient, status.original_recipient])
        if delivery is None:
            continue
        original = delivery.message
        # delayed, delivered, relayed, expanded (RFC 3464 2.3.3): no news a sender must act on;
        # a recipient named in several blocks is failed by the first failed one.
        if status.action != "failed" or delivery.pk in done:
            continue
        done.add(delivery.pk)
        # Passed on twice in the sender's DSN: a few SMTP reply lines' worth (RFC 5321 4.5.3.1.5
        # allows 512 octets a line), not whatever length the partner wrote.
        diagnostic = (status.diagnostic or "")[:DIAGNOSTIC_LIMIT]
        applied |= fail(
            delivery,
            detail=f"DSN {status.status}",
            status=dsn.status_code(status.status, status.action),
            why=diagnostic or "the recipient's HISP could not deliver it",
            # The remote's own code and its type, when it gave one (RFC 3464 2.3.6).
            diagnostic=diagnostic if ";" in diagnostic else None,
            unless_in_flight=True,
        )
    if original is None:
        return "unmatched", None
    return ("applied" if applied else "unchanged"), original


def expire_overdue(now: datetime | None = None) -> int:
    """Fail deliveries whose processed MDN (or, when timely delivery was asked for, dispatched
    MDN) is overdue, with one failure notice each."""
    now = now or timezone.now()
    processed_deadline = now - settings.HISP_MDN_PROCESSED_TIMEOUT
    dispatched_deadline = now - settings.HISP_MDN_DISPATCHED_TIMEOUT
    overdue = Delivery.objects.filter(
        message__direction=Message.Direction.OUTBOUND, message__kind=Message.Kind.REGULAR
    ).filter(
        Q(state=Delivery.State.SENT, sent_at__lt=processed_deadline)
        | Q(state=Delivery.State.PROCESSED, timely=True, sent_at__lt=dispatched_deadline)
        # A processed MDN for a delivery we had not seen sent (its attempt's reply was lost and
        # it was waiting for a retry): counted from that MDN, the latest it can have been sent.
        | Q(
            state=Delivery.State.PROCESSED,
            timely=True,
            sent_at__isnull=True,
            processed_at__lt=dispatched_deadline,
        )
    )
    failed = 0
    # Keys first, then one row at a time: a backlog (a partner that never answers, a sweep
    # that did not run for a while) is thousands of rows, and each carried its protected bytes
    # and its message's. Each is read again, locked, as still overdue: an MDN that arrived since
    # the keys were read is not followed by a failure for a state the delivery has left.
    for pk in list(overdue.values_list("pk", flat=True)):
        with transaction.atomic():
            delivery = (
                overdue.filter(pk=pk)
                .select_related("message")
                .defer("wire", "message__content")
                .select_for_update(of=("self",))
                .first()
            )
            if delivery is None:
                continue
            which = "processed" if delivery.state == Delivery.State.SENT else "dispatched"
            if fail(
                delivery,
                detail=f"no {which} MDN in time",
                status=notices.EXPIRED,
                why=f"no {which} notification arrived from the recipient's HISP in time",
                unless_in_flight=True,
            ):
                failed += 1
    return failed
