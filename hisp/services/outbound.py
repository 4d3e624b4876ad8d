"""Outbound processing: protect a queued message once per destination domain, then deliver it to
each recipient (egress SMTP, or this HISP's own inbound path for hosted recipients), retrying
temporary failures with exponential backoff and failing the rest with one DSN each."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet, Subquery
from django.utils import timezone

import agent
from agent.errors import AgentError, Code
from agent.types import Environment, ProtectOptions
from hisp import durations, egress, mailtext
from hisp.agent_env import PKI_VERSION_CHECK
from hisp.models import Certificate, Delivery, DeliveryEvent, Message
from hisp.services import audit, notices, routes, tracking
from hisp.services.mail import (
    abandoned_too_often,
    claim_lease,
    enqueue,
    find_address,
    finish_message,
    hosted_domain,
    release_message,
    retry_delay,
    single_statement_writes,
)

log = logging.getLogger(__name__)

# Reasons a hold-pending-certificate route may wait out (discovery may succeed later, or staff
# import the partner's certificate out of band).
_HOLDABLE = frozenset({Code.NO_RECIPIENT_CERTIFICATE, Code.UNTRUSTED_RECIPIENT})
MAX_BACKOFF = timedelta(hours=1)
FIRST_BACKOFF = timedelta(minutes=1)


def pending_hold() -> timedelta:
    return settings.HISP_PENDING_CERTIFICATE_HOLD


def pending_recheck() -> timedelta:
    return settings.HISP_PENDING_CERTIFICATE_RECHECK


def backoff(attempts: int) -> timedelta:
    """1, 2, 4 ... minutes, at most an hour apart (RFC 5321 4.5.4.1: at least 30 minutes is
    the classic advice; shorter first retries help the common brief outage)."""
    return min(FIRST_BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _options() -> ProtectOptions:
    neutral = settings.HISP_NEUTRAL_SUBJECT or None
    return ProtectOptions(neutral_subject=neutral)


def _protect(
    raw: bytes,
    sender: str,
    recipients: Sequence[str],
    now: datetime,
    env: Environment | None = None,
    copies: Iterator[_Copy] | None = None,
) -> tuple[bytes | None, dict[str, AgentError]]:
    """One protected copy for ``recipients``: (wire, rejected). ``copies``: the message's
    copies being made (``_protect_copies``), the next of which is this one, so the message is
    not signed again for it; without them, a copy for these recipients alone."""
    source = copies if copies is not None else _protect_copies(raw, sender, [recipients], now, env)
    copy = next(source)
    if copy.recipients != list(recipients):
        # Never store a copy for recipients other than its own: the caller asked out of turn.
        raise RuntimeError("protected copies taken out of order")
    return copy.wire, copy.rejected


class _Copy(NamedTuple):
    recipients: list[str]
    wire: bytes | None
    rejected: dict[str, AgentError]


def _protect_copies(
    raw: bytes,
    sender: str,
    copies: Sequence[Sequence[str]],
    now: datetime,
    env: Environment | None = None,
) -> Iterator[_Copy]:
    """A copy for each list of recipients in ``copies``, in order, made one at a time as the
    caller asks; the message is signed once for all of them (agent.protect_copies)."""
    from hisp.agent_env import build_environment

    try:
        protected = agent.protect_copies(
            raw,
            sender=sender,
            copies=[list(recipients) for recipients in copies],
            env=env or build_environment(),
            at=now,
            options=_options(),
        )
    except AgentError as exc:
        # The message itself cannot be sent (its From, the sender's key): no copy can.
        for recipients in copies:
            yield _Copy(list(recipients), None, {rcpt: exc for rcpt in recipients})
        return
    for recipients in copies:
        # Yielded straight from the call, never through a name here (nor a zip, whose reused
        # result tuple keeps the last item): while the next copy is encrypted, only the caller
        # may hold the previous one, and _process has stored and let it go by then.
        yield _copy_of(next(protected), recipients)


def _copy_of(protected: agent.Protected, recipients: Sequence[str]) -> _Copy:
    encrypted = {r.lower() for r in protected.encrypted_to}
    rejected = {
        rcpt: protected.rejected.get(rcpt) or AgentError(Code.NO_RECIPIENT_CERTIFICATE)
        for rcpt in recipients
        if rcpt.lower() not in encrypted
    }
    return _Copy(list(recipients), protected.message, rejected)


def protect_for(
    *, raw: bytes, sender: str, recipient: str, now: datetime, env: Environment | None = None
) -> bytes | None:
    """The protected bytes of a report for its one recipient, or None when it cannot be
    protected now (the ordinary pipeline then records why: hold, retry or fail)."""
    wire, rejected = _protect(raw, sender, [recipient], now, env)
    return None if rejected else wire


def process(pk: int) -> str:
    message = claim_message_out(pk)
    if message is None:
        return "not-claimed"
    if abandoned_too_often(message):
        log.error("message %s: abandoned %s times, its recipients fail", pk, message.abandoned)
        return _give_up(message, why="this HISP could not process it (cut short repeatedly)")
    try:
        return _process(message)
    except Exception:
        # Never a silent drop or an endless loop: retry a few times, then fail with DSNs.
        log.exception("message %s: protection failed", pk)
        return _after_internal_error(message)


# An unexpected error while protecting a message (a bug, most likely) gets this many tries in
# all, then the recipients still waiting fail. Counted on their own, not by Message.attempts:
# that also counts the rounds that wait out a transient protection failure for
# HISP_RETRY_PERIOD (often more than this), and a bug hit after those deserves its retries too.
MAX_INTERNAL_ERRORS = 5
# What counts them, with no column of its own: each internal error adds this DeliveryEvent to
# every recipient still waiting, so their history shows it and each of them holds the count.
INTERNAL_ERROR = "internal error: processing retried"


def _after_internal_error(message: Message) -> str:
    with transaction.atomic():
        # Only the unprotected: a protected one belongs to the delivery tasks already.
        waiting = list(message.deliveries.filter(state=Delivery.State.QUEUED, wire__isnull=True))
        errors = _internal_errors(waiting) + 1
        if waiting and errors < MAX_INTERNAL_ERRORS:
            # Paced by this count too (1, 2, 4, 8 minutes), not by the transient rounds': a
            # bug that persists is reported within minutes, not hours.
            if not _retry_later(message, delay=retry_delay(errors)):
                return "lease-lost"
            DeliveryEvent.objects.bulk_create(
                DeliveryEvent(delivery=d, state=Delivery.State.QUEUED, detail=INTERNAL_ERROR)
                for d in waiting
            )
            return "retry"
    return _give_up(message, why="this HISP could not process it")


def _give_up(message: Message, *, why: str) -> str:
    """Fail the recipients still waiting for protection, each with one DSN, and finish the
    message as _process would: sent when recipients protected in earlier rounds (or held)
    are still on their way."""
    with transaction.atomic():
        waiting = list(message.deliveries.filter(state=Delivery.State.QUEUED, wire__isnull=True))
        alive = (
            message.deliveries.exclude(pk__in=[d.pk for d in waiting])
            .exclude(state=Delivery.State.FAILED)
            .exists()
        )
        state = Message.State.SENT if alive else Message.State.FAILED
        if not finish_message(message, state=state, reason="" if alive else "internal-error"):
            return "lease-lost"  # nothing written: the message is someone else's now
        for delivery in waiting:
            tracking.fail(delivery, detail="internal-error", status="5.3.0", why=why)
    return "failed"


def _internal_errors(waiting: list[Delivery]) -> int:
    """How many internal errors the message has had: a recipient is waiting only if it waited
    through all of them, so any one holds the count (the largest, should one ever not)."""
    counts = (
        DeliveryEvent.objects.filter(delivery__in=waiting, detail=INTERNAL_ERROR)
        .values("delivery")
        .order_by()
        .annotate(n=Count("id"))
        .values_list("n", flat=True)
    )
    return max(counts, default=0)


def _retry_later(message: Message, *, delay: timedelta | None = None) -> bool:
    """Back to the queue, processed again ``delay`` from now: by default
    ``retry_delay(attempts)``, the sweeper's schedule for it, which a shorter delay only
    anticipates; False when the lease was lost."""
    from hisp.tasks.mail import process_outgoing

    attempts = message.attempts + 1
    if not release_message(message, back_to=Message.State.QUEUED, attempts=attempts):
        return False
    countdown = (retry_delay(attempts) if delay is None else delay).total_seconds()
    transaction.on_commit(
        lambda: process_outgoing.apply_async((message.pk,), countdown=countdown), robust=True
    )
    return True


def signed_content(message: Message) -> bytes:
    """What the agent signs for an outbound message: the submission port's Received stamp, then
    the message as submitted. The stamp travels encrypted, so only the recipients learn the
    client's address (RFC 5321 sections 4.4 and 7.6)."""
    if not message.trace:
        return bytes(message.raw)
    return message.trace.encode("ascii") + bytes(message.raw)


def _process(message: Message) -> str:
    now = timezone.now()
    raw = signed_content(message)
    deliveries = list(message.deliveries.filter(state=Delivery.State.QUEUED, wire__isnull=True))
    named = _named_recipients(raw, deliveries)
    groups: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in deliveries:
        groups[_copy_group(delivery, named)].append(delivery)
    results: list[tuple[Delivery, bool, AgentError | None]] = []
    wired_groups: list[list[int]] = []
    copies = [[d.recipient for d in group] for group in groups.values()]
    # Signed once for every copy; each copy encrypted only when the loop asks for it.
    protected_copies = _protect_copies(raw, message.envelope_from, copies, now)
    for group, recipients in zip(groups.values(), copies, strict=True):
        wire, rejected = _protect(
            raw, message.envelope_from, recipients, now, copies=protected_copies
        )
        protected = [d for d in group if d.recipient not in rejected]
        if wire is not None and protected:
            # Stored now, one group at a time, and let go: holding every domain's copy until
            # the end would keep a 25 MB message's copies for a hundred domains in memory at
            # once. Only while our claim holds; a row stored before a crash is sent by the
            # sweeper's rule for protected deliveries, and the next round leaves it alone.
            stored = Delivery.objects.filter(
                pk__in=[d.pk for d in protected],
                state=Delivery.State.QUEUED,
                wire__isnull=True,
                message__state=Message.State.PROCESSING,
                message__claimed_at=message.claimed_at,
            ).update(wire=wire, updated_at=now)
            if stored < len(protected) and not _still_ours(message):
                return "lease-lost"
            # (A delivery staff failed meanwhile is not stored; its task will find it final.)
            wired_groups.append(sorted(d.pk for d in protected))
        del wire
        for delivery in group:
            error = rejected.get(delivery.recipient)
            results.append((delivery, error is None, error))
    # A transient reason (a CRL or DNS server not answering) is waited out as long as an SMTP
    # 4xx would be (HISP_RETRY_PERIOD since the message was queued): the recipients it hit
    # stay queued unprotected and the message comes back; the others go now. Where the route
    # holds for certificates, a discovery that could not finish is held at once instead (the
    # sender is told, and the hold bounds the wait).
    waiting = now < message.created_at + settings.HISP_RETRY_PERIOD
    retry = [
        d
        for d, _w, e in results
        if e is not None and not e.permanent and waiting and not _would_hold(d, e)
    ]
    wired = [pk for pks in wired_groups for pk in pks]
    ready = 0
    with transaction.atomic():
        held = 0
        for delivery, protected, error in results:
            if not protected and delivery not in retry:
                assert error is not None
                held += _refuse(delivery, error, now)
        if retry:
            if not _retry_later(message):
                transaction.set_rollback(True)
                return "lease-lost"
        else:
            # Deliveries protected in an earlier round (or before a crash) count too: they
            # are on their way.
            ready = (
                held
                + message.deliveries.exclude(
                    pk__in=[d.pk for d, protected, _e in results if not protected]
                )
                .exclude(state=Delivery.State.FAILED)
                .count()
            )
            state = Message.State.SENT if ready else Message.State.FAILED
            reason = "" if ready else _common_reason(results)
            if not finish_message(message, state=state, reason=reason):
                transaction.set_rollback(True)
                return "lease-lost"
        if len(wired) > 1:
            # One task per copy: it takes that copy's other deliveries along in the same SMTP
            # transaction (_claim_companions).
            for pks in wired_groups:
                for pk in pks[:: egress.MAX_RECIPIENTS]:
                    enqueue("deliver", pk)
    if len(wired) == 1:
        # One destination (every MDN, most mail): deliver in this task, no queue round trip.
        # Committed first, so if this worker dies now the sweeper queues the delivery.
        deliver(wired[0])
    if retry:
        return "retry"
    return f"protected:{ready}/{len(results)}"


def _still_ours(message: Message) -> bool:
    return Message.objects.filter(
        pk=message.pk, state=Message.State.PROCESSING, claimed_at=message.claimed_at
    ).exists()


def _named_recipients(raw: bytes, deliveries: list[Delivery]) -> frozenset[str]:
    """The addresses the message's To and Cc fields show every reader (lower case); none to
    look for when there is at most one recipient."""
    if len(deliveries) < 2:
        return frozenset()
    try:
        head = mailtext.parse(mailtext.head_of(raw))
        named = (*mailtext.addresses(head, "To"), *mailtext.addresses(head, "Cc"))
    except Exception:  # noqa: BLE001 - unreadable fields name no one: each gets its own copy
        return frozenset()
    return frozenset(a.lower() for a in named)


def _copy_group(delivery: Delivery, named: frozenset[str]) -> str:
    """Which protected copy ``delivery`` gets: one per destination domain for the recipients
    the header fields name, and one of its own for each blind (Bcc or envelope-only) recipient.
    A shared copy has a RecipientInfo for every recipient's certificate (RFC 5652 6.1), so a
    blind recipient in it would be known to all the others (RFC 5322 3.6.3)."""
    if delivery.recipient.lower() in named:
        return "domain:" + _domain(delivery.recipient)
    return f"blind:{delivery.pk}"


def claim_message_out(pk: int) -> Message | None:
    from hisp.services.mail import claim_message

    return claim_message(pk, from_state=Message.State.QUEUED)


def _common_reason(results: list[tuple[Delivery, bool, AgentError | None]]) -> str:
    codes = {str(e.code) for _d, _w, e in results if e is not None}
    return codes.pop() if len(codes) == 1 else "no-recipient-protected"


def _holds(recipient: str) -> bool:
    route = routes.lookup(_domain(recipient))
    return route is not None and route.hold_pending_certificate


def _would_hold(delivery: Delivery, error: AgentError) -> bool:
    return error.code in _HOLDABLE and _holds(delivery.recipient)


def _refuse(delivery: Delivery, error: AgentError, now: datetime) -> int:
    """A recipient we could not protect for: hold it (route setting) or fail it. Returns 1
    when the delivery is still alive (held)."""
    if _would_hold(delivery, error):
        if Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.QUEUED).update(
            state=Delivery.State.PENDING_CERTIFICATE,
            detail=str(error.code),
            first_attempt_at=now,
            next_attempt_at=now + pending_recheck(),
            updated_at=now,
        ):
            DeliveryEvent.objects.create(
                delivery=delivery, state=Delivery.State.PENDING_CERTIFICATE, detail=str(error.code)
            )
            until = (now + pending_hold()).strftime("%Y-%m-%d %H:%M UTC")
            notices.file_pending_notice(delivery, code=str(error.code), until=until)
        return 1
    if not error.permanent:  # waited out for HISP_RETRY_PERIOD already (see _process)
        tracking.fail(
            delivery,
            detail=str(error.code),
            status=notices.EXPIRED,
            why=f"it could not be protected for this recipient within "
            f"{durations.describe(settings.HISP_RETRY_PERIOD)} ({error.code})",
        )
        return 0
    tracking.fail(
        delivery,
        detail=str(error.code),
        status=notices.status_for(str(error.code)),
        why=f"it could not be protected for this recipient ({error.code})",
    )
    return 0


def _claim_delivery(pk: int, *, only_due: bool = False) -> Delivery | None:
    now = timezone.now()
    expired = now - claim_lease()
    claimable = Delivery.objects.filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=expired),
        pk=pk,
        state__in=[
            Delivery.State.QUEUED,
            Delivery.State.DEFERRED,
            Delivery.State.PENDING_CERTIFICATE,
        ],
        message__direction=Message.Direction.OUTBOUND,
    )
    if only_due:
        # A task queued before a batch (see _claim_companions) re-deferred this delivery must
        # not spend another attempt early.
        claimable = claimable.exclude(state=Delivery.State.DEFERRED, next_attempt_at__gt=now)
    if not claimable.update(claimed_at=now):
        return None
    # The message's own bytes are read only where needed (a pending re-check, a DSN).
    return Delivery.objects.select_related("message").defer("message__raw").get(pk=pk)


def deliver(pk: int, *, only_due: bool = False) -> str:
    """Attempt one delivery (and, over SMTP, its due companions of the same message and
    domain). ``only_due`` (the queued task) leaves a deferred delivery alone until it is due."""
    delivery = _claim_delivery(pk, only_due=only_due)
    if delivery is None:
        return "not-claimed"
    if abandoned_too_often(delivery):
        # Attempts that never recorded an outcome: the remote may have the message already,
        # but another try could kill this worker again. One DSN says what we know.
        log.error("delivery %s: attempt abandoned %s times, failed", pk, delivery.abandoned)
        with transaction.atomic():
            tracking.fail(
                delivery,
                detail="internal-error: attempts cut short repeatedly",
                status="5.3.0",
                why="this HISP's attempts to send it were cut short repeatedly; it may or may "
                "not have arrived",
            )
        return "failed"
    return _attempt(delivery, timezone.now())


def send_claimed(delivery: Delivery) -> str:
    """Send a delivery its creator stored already protected and claimed (``claimed_at`` set in
    the same transaction), without another claim: used for MDNs right after the inbound commit.
    Should this worker die first, the sweeper re-queues it when the claim expires."""
    return _attempt(delivery, timezone.now())


def _attempt(delivery: Delivery, now: datetime) -> str:
    pk = delivery.pk
    if delivery.state == Delivery.State.PENDING_CERTIFICATE:
        return _recheck_pending(delivery, now)
    if delivery.wire is None:
        # Not protected yet (its message is still being processed): let that finish first.
        Delivery.objects.filter(pk=pk, claimed_at=delivery.claimed_at).update(claimed_at=None)
        return "not-ready"
    if hosted_domain(_domain(delivery.recipient)):
        return _deliver_locally(delivery, now)
    batch = [delivery, *_claim_companions(delivery, now)]
    outcomes = _send(
        bytes(delivery.wire),
        reverse_path(delivery.message),
        [d.recipient for d in batch],
        pk,
        _deadline(delivery.claimed_at or now),
    )
    results = [_record(d, outcomes[d.recipient], now) for d in batch]
    return results[0]


# Reports and notices this HISP writes itself. Their rows keep the hosted reporter in
# ``envelope_from`` (the address whose key signs them, see _protect); only the wire differs.
_AUTO_GENERATED = frozenset({Message.Kind.MDN, Message.Kind.DSN, Message.Kind.NOTICE})


def reverse_path(message: Message) -> str:
    """The SMTP MAIL FROM for ``message``: null ("", sent as ``<>``) for an MDN (RFC 3798
    section 3), a DSN (RFC 3464 section 2) and a courtesy notice (RFC 3834 section 3.3), so
    no receiver ever answers them and no two systems can loop."""
    return "" if message.kind in _AUTO_GENERATED else message.envelope_from


def _deadline(claimed_at: datetime) -> float:
    """When an attempt under the claim taken at ``claimed_at`` must be over, on the
    ``time.monotonic()`` clock egress uses: counted from the claim, not from this attempt, so
    several attempts under one claim (the MDNs of one inbound message, sent in turn) end
    together, well before the sweeper may hand the work to another worker."""
    ends = claimed_at + settings.HISP_CLAIM_LEASE * egress.ATTEMPT_SHARE
    return time.monotonic() + (ends - timezone.now()).total_seconds()


def _send(
    wire: bytes, mail_from: str, recipients: list[str], pk: int, deadline: float
) -> dict[str, egress.Outcome]:
    """egress.send_batch, with anything it did not expect turned into an outcome: left to
    escape, it would skip _record, so the attempt would never count and the sweeper would
    re-queue the delivery forever with no DSN."""
    try:
        return egress.send_batch(
            wire=wire, mail_from=mail_from, recipients=recipients, deadline=deadline
        )
    except UnicodeError:
        # smtplib cannot write a non-ASCII address (Direct has no SMTPUTF8). It fails while
        # the RCPT commands are written, before DATA, so nobody has the message yet: each
        # recipient alone, so that one bad address does not fail its companions.
        log.warning("delivery %s: a recipient address is not plain ASCII", pk)
        if len(recipients) > 1:
            return {r: _send(wire, mail_from, [r], pk, deadline)[r] for r in recipients}
        why = "the address is not plain ASCII (Direct does not support SMTPUTF8)"
        return {recipients[0]: egress.Outcome(egress.Result.PERMANENT, NOT_SENT + why, "5.3.0")}
    except Exception as exc:
        # Anything else may have come after the remote accepted the message, so neither a
        # failure DSN nor a resend now would be right: a temporary outcome, retried on the
        # usual schedule and failed with one DSN if it persists for HISP_RETRY_PERIOD.
        log.exception("delivery %s: unexpected %s in egress", pk, type(exc).__name__)
        why = f"this HISP failed while sending it ({type(exc).__name__})"
        return dict.fromkeys(
            recipients, egress.Outcome(egress.Result.TEMPORARY, NOT_SENT + why, "4.3.0")
        )


# Starts the detail of an outcome this HISP made up (a server's reply starts with its code).
NOT_SENT = egress.NOT_SENT


def _claim_companions(delivery: Delivery, now: datetime) -> list[Delivery]:
    """The message's other deliveries to the same domain that are due now. They carry the same
    protected bytes (one protection per domain), so one SMTP transaction serves them all
    (egress.send_batch); each is claimed here and recorded with its own outcome."""
    if len(delivery.message.envelope_to) < 2:
        return []  # one recipient (every MDN): no companions to look for
    expired = now - claim_lease()
    due = (
        Delivery.objects.filter(
            Q(claimed_at__isnull=True) | Q(claimed_at__lt=expired),
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
            message_id=delivery.message_id,
            state__in=[Delivery.State.QUEUED, Delivery.State.DEFERRED],
            recipient__iendswith="@" + _domain(delivery.recipient),
            # The same copy (a blind recipient has its own): compared by the database, row to
            # row, so that no companion's copy is read into this worker.
            wire=Subquery(Delivery.objects.filter(pk=delivery.pk).values("wire")[:1]),
        )
        .exclude(pk=delivery.pk)
        .order_by("pk")
    )  # pk order: matches the tasks _process queued
    claimed: list[Delivery] = []
    for pk in list(due.values_list("pk", flat=True)[: egress.MAX_RECIPIENTS - 1]):
        if not due.filter(pk=pk).update(claimed_at=now):
            continue  # another worker took it
        # Without its copy (the one in hand) or the message's bytes: loaded whole, a hundred
        # companions of a 25 MB message held 4 GB until the transaction was over.
        claimed.append(_without_bytes(Delivery.objects.select_related("message")).get(pk=pk))
    return claimed


def _without_bytes(deliveries: QuerySet[Delivery]) -> QuerySet[Delivery]:
    """Deliveries with their message, leaving the bytes (the protected copy and the message
    as submitted) to be read only if used: an attempt sends its one copy, read separately."""
    return deliveries.defer("wire", "message__raw")


def _mine(delivery: Delivery) -> Q:
    return Q(pk=delivery.pk, claimed_at=delivery.claimed_at)


def _deliver_locally(delivery: Delivery, now: datetime) -> str:
    """Hosted recipient: the protected bytes enter our own inbound path, exactly as if another
    HISP had sent them (same unprotect, same trust decision, same MDNs)."""
    if find_address(delivery.recipient) is None:
        # What backbone ingress would answer with 550 5.1.1 (no MDN would ever come).
        with transaction.atomic():
            tracking.fail(
                delivery,
                detail="550 5.1.1 No such user here",
                status="5.1.1",
                why="there is no such address at this HISP",
            )
        return "failed"
    with transaction.atomic():
        moved = Delivery.objects.filter(_mine(delivery)).update(
            state=Delivery.State.SENT,
            detail="delivered to this HISP's inbound queue",
            sent_at=now,
            first_attempt_at=delivery.first_attempt_at or now,
            attempts=delivery.attempts + 1,
            claimed_at=None,
            updated_at=now,
        )
        if not moved:
            return "lease-lost"
        DeliveryEvent.objects.create(delivery=delivery, state=Delivery.State.SENT, detail="local")
        inbound = Message.objects.create(
            direction=Message.Direction.INBOUND,
            state=Message.State.RECEIVED,
            raw=bytes(delivery.wire or b""),
            envelope_from=reverse_path(delivery.message),  # as backbone ingress would store it
            envelope_to=[delivery.recipient],
            peer="local",
        )
        enqueue("process_incoming", inbound.pk)
    return "sent:local"


def _record(delivery: Delivery, outcome: egress.Outcome, now: datetime) -> str:
    first = delivery.first_attempt_at or now
    attempts = delivery.attempts + 1
    if outcome.result is egress.Result.SENT and single_statement_writes():
        _record_sent(delivery, outcome.detail[:500], now=now, first=first, attempts=attempts)
        return "sent"
    with transaction.atomic():
        if outcome.result is egress.Result.SENT:
            moved = Delivery.objects.filter(_mine(delivery)).update(
                state=Delivery.State.SENT,
                detail=outcome.detail[:500],
                sent_at=now,
                first_attempt_at=first,
                attempts=attempts,
                claimed_at=None,
                next_attempt_at=None,
                updated_at=now,
            )
            if moved:
                DeliveryEvent.objects.create(
                    delivery=delivery, state=Delivery.State.SENT, detail=outcome.detail[:500]
                )
                audit.record(action="delivery.sent", obj=delivery, actor="system")
            return "sent"
        # Only a temporary failure can run out of time: a refusal is reported as a refusal,
        # with its own status, however late in the retry period it came.
        temporary = outcome.result is egress.Result.TEMPORARY
        expired = temporary and now >= first + settings.HISP_RETRY_PERIOD
        if temporary and not expired:
            moved = Delivery.objects.filter(_mine(delivery)).update(
                state=Delivery.State.DEFERRED,
                detail=outcome.detail[:500],
                first_attempt_at=first,
                attempts=attempts,
                claimed_at=None,
                next_attempt_at=now + backoff(attempts),
                updated_at=now,
            )
            if moved:
                DeliveryEvent.objects.create(
                    delivery=delivery, state=Delivery.State.DEFERRED, detail=outcome.detail[:500]
                )
            return "deferred"
        if not Delivery.objects.filter(_mine(delivery)).update(
            first_attempt_at=first, attempts=attempts
        ):
            return "lease-lost"
        status = outcome.status if not expired else notices.EXPIRED
        if status.startswith("4"):
            status = "5" + status[1:]
        why = _failure_why(outcome, expired=expired)
        tracking.fail(
            delivery,
            detail=outcome.detail,
            status=status,
            why=why,
            remote_mta=outcome.remote or None,
            last_attempt=now,
        )
    return "failed"


def _failure_why(outcome: egress.Outcome, *, expired: bool) -> str:
    """The sentence of the sender's DSN: whose doing the failure was (the destination's, or
    this HISP's own, whose outcomes start with NOT_SENT) and, after retries, for how long."""
    ours = outcome.detail.startswith(NOT_SENT)
    reason = outcome.detail.removeprefix(NOT_SENT)
    if not expired:
        return reason if ours else f"the destination refused it: {reason}"
    period = durations.describe(settings.HISP_RETRY_PERIOD)
    if ours:
        return f"it could not be sent for {period}; last attempt: {reason}"
    return (
        f"the destination refused it for now or could not be reached, for {period} (last: {reason})"
    )


def _record_sent(
    delivery: Delivery, detail: str, *, now: datetime, first: datetime, attempts: int
) -> None:
    """What the SENT branch of ``_record`` does, as one statement on PostgreSQL (its CTEs
    commit together or not at all): every delivered message passes here for its MDN, and the
    transaction of three statements cost more than the SMTP transaction it records."""
    quote = connection.ops.quote_name
    audit_sql, audit_params = audit.appended_for(
        "moved", action="delivery.sent", object_type=Delivery._meta.label_lower
    )
    sql = (
        f"WITH moved AS (UPDATE {quote(Delivery._meta.db_table)} SET state = %s, detail = %s, "  # noqa: S608
        "sent_at = %s, first_attempt_at = %s, attempts = %s, claimed_at = NULL, "
        "next_attempt_at = NULL, updated_at = %s "
        "WHERE id = %s AND claimed_at IS NOT DISTINCT FROM %s RETURNING id), "
        f"events AS (INSERT INTO {quote(DeliveryEvent._meta.db_table)} "
        "(delivery_id, state, detail, at) SELECT id, %s, %s, %s FROM moved), "
        f"audited AS ({audit_sql}) SELECT count(*) FROM moved"
    )
    sent = Delivery.State.SENT
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                sent,
                detail,
                now,
                first,
                attempts,
                now,
                delivery.pk,
                delivery.claimed_at,
                sent,
                detail,
                now,
                *audit_params,
            ],
        )


def _recheck_pending(delivery: Delivery, now: datetime) -> str:
    message = delivery.message
    wire, rejected = _protect(
        signed_content(message), message.envelope_from, [delivery.recipient], now
    )
    first = delivery.first_attempt_at or now
    with transaction.atomic():
        if wire is not None:
            moved = Delivery.objects.filter(
                _mine(delivery), state=Delivery.State.PENDING_CERTIFICATE
            ).update(
                state=Delivery.State.QUEUED,
                wire=wire,
                detail="certificate found",
                claimed_at=None,
                next_attempt_at=None,
                # The time held is not time spent retrying SMTP: HISP_RETRY_PERIOD counts
                # from the first attempt to send it, not from when the hold began.
                first_attempt_at=None,
                updated_at=now,
            )
            if moved:
                DeliveryEvent.objects.create(
                    delivery=delivery, state=Delivery.State.QUEUED, detail="certificate found"
                )
                enqueue("deliver", delivery.pk)
            return "released"
        error = rejected[delivery.recipient]
        # The route as it is now decides (the console says so when a hold is turned off or
        # the route deleted): without the hold, the delivery fails as it would have at first.
        holding = _holds(delivery.recipient)
        in_time = now < first + pending_hold()
        # A passing trouble (a CRL or directory out of reach) says nothing about whether a
        # certificate will come: the hold goes on.
        if in_time and holding and (error.code in _HOLDABLE or not error.permanent):
            Delivery.objects.filter(_mine(delivery)).update(
                claimed_at=None, next_attempt_at=now + pending_recheck(), updated_at=now
            )
            return "still-pending"
        if (
            not Delivery.objects.select_for_update()
            .filter(_mine(delivery), state=Delivery.State.PENDING_CERTIFICATE)
            .exists()
        ):
            # The lease ran out during discovery and another worker has the delivery now (or
            # staff acted on it): its outcome is that worker's to record, not a second DSN.
            return "lease-lost"
        if error.code not in _HOLDABLE and error.permanent:
            # What no certificate cures (the sender's own key is gone, say).
            status = notices.status_for(str(error.code))
            why = f"it could not be protected for this recipient ({error.code})"
        elif not holding and in_time:
            status = notices.status_for(str(error.code))
            why = (
                f"it could not be protected for this recipient ({error.code}), and mail "
                "for its domain is no longer held until a certificate is found"
            )
        elif error.code in _HOLDABLE:
            # The reason as it is at the end (the pending notice gave the one at the start).
            status = notices.status_for(str(error.code))
            reason = notices.held_because(str(error.code))
            why = f"{reason}, still at the end of the hold ({error.code})"
        else:
            # A passing trouble outlasted the hold (a certificate was found, its CRL never
            # came): the time ran out, the certificate is not known to be missing.
            status = notices.EXPIRED
            why = (
                f"it could not be protected for this recipient within the "
                f"{durations.describe(pending_hold())} it was held ({error.code})"
            )
        tracking.fail(delivery, detail=str(error.code), status=status, why=why)
    return "failed"


def _held(*, domain: str | None = None, address: str | None = None) -> QuerySet[Delivery]:
    """Outbound deliveries held for a certificate (to ``address`` or ``domain``, in any case:
    a re-check too many costs one look-up, one too few leaves a delivery waiting)."""
    held = Delivery.objects.filter(
        state=Delivery.State.PENDING_CERTIFICATE, message__direction=Message.Direction.OUTBOUND
    )
    if address:
        held = held.filter(recipient__iexact=address)
    elif domain:
        held = held.filter(recipient__iendswith="@" + domain.lower())
    return held


def release_pending(*, domain: str | None = None) -> int:
    """Re-check held deliveries now, in this process (an operator's command; staff imports
    queue theirs with recheck_held_soon)."""
    count = 0
    for pk in _held(domain=domain).values_list("pk", flat=True):
        deliver(pk)
        count += 1
    return count


# A worker compares the PKI stamp at most every PKI_VERSION_CHECK seconds (agent_env): a
# re-check started sooner after the import could read the certificate rows from before it and
# hold the delivery for another HISP_PENDING_CERTIFICATE_RECHECK.
RECHECK_AFTER_IMPORT = 2 * PKI_VERSION_CHECK


def recheck_held_soon(
    *, certificate_pk: int | None = None, sender_domain: str | None = None
) -> None:
    """Have the workers re-check, once the current transaction commits, the held deliveries
    that a certificate (``certificate_pk``: a partner's, imported by staff) or a new trust
    anchor of ``sender_domain`` (only its senders' deliveries check recipients against that
    domain's anchors) may release, instead of at their next periodic re-check (up to
    HISP_PENDING_CERTIFICATE_RECHECK later). Only ids and names go through the broker;
    finding the deliveries and the discovery each re-check does are the worker's, never the
    staff request's. Published robustly: with the broker down the import stands, and the
    periodic re-check still comes."""
    from hisp.tasks.mail import recheck_held

    transaction.on_commit(
        lambda: recheck_held.apply_async(
            (certificate_pk, sender_domain), countdown=RECHECK_AFTER_IMPORT
        ),
        robust=True,
    )


def queue_held_rechecks(
    *, certificate_pk: int | None = None, sender_domain: str | None = None
) -> int:
    """Queue a re-check (a ``deliver`` task each, claimed as usual) of every held delivery the
    certificate ``certificate_pk`` is bound to (its address, or any address of its domain),
    or of every held delivery sent from ``sender_domain`` (an anchor it imported), or of every
    held delivery when neither is given; returns how many were queued."""
    held = _held()
    if certificate_pk is not None:
        bound = (
            Certificate.objects.filter(pk=certificate_pk)
            .values_list("binding", "bound_name")
            .first()
        )
        if bound is None:
            return 0  # removed by staff meanwhile: it releases nothing
        binding, name = bound
        if binding == Certificate.Binding.ADDRESS:
            held = _held(address=name)
        else:
            held = _held(domain=name)
    elif sender_domain:
        held = held.filter(message__envelope_from__iendswith="@" + sender_domain.lower())
    pks = list(held.values_list("pk", flat=True))
    for pk in pks:
        enqueue("deliver", pk)
    return len(pks)
