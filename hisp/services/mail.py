"""The mail flow's front door and its bookkeeping: accepting SMTP mail, queueing work on commit,
and the sweeper that returns stalled work to the queue.

The flow itself lives next to this module: :mod:`hisp.services.inbound` (unprotect and deliver),
:mod:`hisp.services.outbound` (protect, egress, retries), :mod:`hisp.services.tracking` (MDNs,
DSNs and time-outs) and :mod:`hisp.services.compose` (new messages). Every state change is a
conditional UPDATE, so a task that runs twice does nothing the second time.
"""

from __future__ import annotations

import copy
import enum
import functools
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import (
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Field,
    Q,
    Value,
)
from django.db.models.functions import Least
from django.utils import timezone

from hisp.agent_env import MISSING, cached_rows, peek_cached_rows
from hisp.models import Address, Delivery, Domain, Message
from hisp.services import audit, rows
from hisp.services.batches import BatchPublisher

log = logging.getLogger(__name__)

def claim_lease() -> timedelta:
    return settings.HISP_CLAIM_LEASE


def queue_grace() -> timedelta:
    return settings.HISP_QUEUE_GRACE


# A message whose processing failed for a transient reason is released with ``attempts``
# incremented and retried ``retry_delay(attempts)`` later (a countdown task). The delay stops
# growing here: inbound gives up after a few attempts, while outbound waits a transient
# protection failure out for HISP_RETRY_PERIOD, every 128 minutes from then on.
MAX_RETRY_ATTEMPTS = 8


def retry_delay(attempts: int) -> timedelta:
    """The planned wait after the ``attempts``-th transient failure: 1, 2, 4 ... minutes."""
    return timedelta(minutes=1 << (min(max(attempts, 1), MAX_RETRY_ATTEMPTS) - 1))


class Verdict(enum.Enum):
    ACCEPT = "250 2.1.5 OK"
    UNKNOWN = "550 5.1.1 No such user here"
    RELAY = "550 5.7.1 Relaying denied: not a domain hosted here"


def find_address(address: str) -> Address | None:
    """The hosted Address for ``address``: the stored form (domain lower-cased) first, which
    the unique index answers; a case-insensitive match only when that misses.

    Remembered per process while the directory stamp is unchanged (hisp.agent_env: at most a
    second behind a change), because every message asks for each of its recipients. The row
    returned is a copy: callers may change it without touching the cache."""
    value = _stored_form(address)
    if value is None:
        return None
    row = cached_rows(("address", value), lambda: _load_address(value))
    return copy.copy(row) if row is not None else None


def _stored_form(address: str) -> str | None:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        return None
    return f"{local}@{domain.lower().rstrip('.')}"


def _load_address(value: str) -> Address | None:
    return (
        Address.objects.filter(address=value).first()
        or Address.objects.filter(address__iexact=value).first()
    )


def hosted_domain(name: str) -> bool:
    """Whether ``name`` is a domain hosted here (remembered like :func:`find_address`)."""
    name = name.lower().rstrip(".")
    return cached_rows(("domain", name), lambda: Domain.objects.filter(name=name).exists())


def remembered_verdict(address: str) -> Verdict | None:
    """:func:`recipient_verdict` from this process's memory alone, without I/O (so the SMTP
    event loop can answer RCPT without a thread hop), or None when it would need a query."""
    local, _, domain = address.rpartition("@")
    if not local:
        return Verdict.UNKNOWN if address.lower() == "postmaster" else Verdict.RELAY
    hosted = peek_cached_rows(("domain", domain.lower().rstrip(".")))
    if hosted is MISSING:
        return None
    if not hosted:
        return Verdict.RELAY
    value = _stored_form(address)
    row = MISSING if value is None else peek_cached_rows(("address", value))
    if row is MISSING:
        return None
    active = isinstance(row, Address) and row.status == Address.Status.ACTIVE
    return Verdict.ACCEPT if active else Verdict.UNKNOWN


def postmaster_address() -> str | None:
    """Where ``RCPT TO:<Postmaster>`` (no domain) goes: ``postmaster@`` the hosted domain that
    HISP_HOSTNAME lies in (the nearest one), or None when it lies in none. Whether that address
    exists is then the usual recipient check."""
    labels = settings.HISP_HOSTNAME.lower().rstrip(".").split(".")
    for start in range(len(labels) - 1):
        domain = ".".join(labels[start:])
        if hosted_domain(domain):
            return f"postmaster@{domain}"
    return None


def recipient_verdict(address: str) -> Verdict:
    """Whether backbone ingress accepts mail for ``address`` (never an open relay)."""
    local, _, domain = address.rpartition("@")
    if not local:
        return Verdict.UNKNOWN if address.lower() == "postmaster" else Verdict.RELAY
    if not hosted_domain(domain):
        return Verdict.RELAY
    row = find_address(address)  # same domain: the address matches it, ignoring case
    return Verdict.ACCEPT if row and row.status == Address.Status.ACTIVE else Verdict.UNKNOWN


def enqueue(task_name: str, pk: int) -> None:
    """Queue a task by primary key once the current transaction commits.

    Like Celery's ``delay_on_commit``, but robust: if the broker is unreachable the commit still
    stands (the SMTP client already has or will get its 250) and the sweeper queues the work
    later, instead of the error turning into a 4xx that makes the client send a duplicate.
    """
    from hisp.tasks import mail as tasks

    task = getattr(tasks, task_name)
    transaction.on_commit(lambda: task.delay(pk), robust=True)


_incoming_batches: BatchPublisher | None = None


def publish_incoming_in_batches(*, size: int, linger: float) -> BatchPublisher:
    """From now on, hand the ids of messages this process accepts to the workers in batches
    (hisp.services.batches; the SMTP listener turns this on). ``close()`` the publisher
    returned when the process stops, so that ids still waiting are handed over."""
    global _incoming_batches
    from hisp.tasks.mail import process_incoming_batch

    _incoming_batches = BatchPublisher(process_incoming_batch.delay, size=size, linger=linger)
    return _incoming_batches


def stop_incoming_batches() -> None:
    global _incoming_batches
    publisher, _incoming_batches = _incoming_batches, None
    if publisher is not None and not publisher.close():
        log.warning("received message ids were still waiting at shutdown; the sweeper will "
                    "queue them")


def _queue_incoming(pk: int) -> None:
    publisher = _incoming_batches
    if publisher is None:
        enqueue("process_incoming", pk)
    else:
        transaction.on_commit(lambda: publisher.add(pk), robust=True)


RECEIVED = "message.received"  # the audit action for every message the backbone accepts


def accept_incoming(
    *, raw: bytes, mail_from: str, rcpt_tos: Sequence[str], peer: str, trace: str = ""
) -> Message:
    """Store a message received on the backbone and queue its processing.

    Called from the SMTP DATA handler (in a worker thread): the bytes are stored exactly as
    received, in one transaction with the envelope and the listener's ``Received`` stamp
    (``trace``), and nothing is parsed here.
    """
    message = Message(
        direction=Message.Direction.INBOUND,
        state=Message.State.RECEIVED,
        raw=raw,
        envelope_from=mail_from,
        envelope_to=list(rcpt_tos),
        peer=peer,
        trace=trace,
    )
    actor, client = f"smtp:{peer}", _ip(peer)
    detail = {"size": len(raw), "recipients": len(rcpt_tos)}
    if single_statement_writes():
        # The message and its audit event in one statement (atomic by itself): one round trip
        # instead of a transaction of four, for every message received.
        try:
            _store_with_audit(message, actor=actor, client=client, detail=detail)
        except DatabaseError:
            if not _stored_after_all(message):
                raise
        _queue_incoming(message.pk)  # queued at once, or when an outer transaction commits
        return message
    with transaction.atomic():
        message.save(force_insert=True)
        audit.record(action=RECEIVED, obj=message, actor=actor, client=client, **detail)
        _queue_incoming(message.pk)
    return message


# How often to look again for a message whose commit went unconfirmed, while the database is
# unreachable (seconds).
UNCONFIRMED_POLL = 0.5


def _stored_after_all(message: Message) -> bool:
    """After the INSERT failed: whether it committed all the same, and if so ``message.pk``.

    A connection lost while the statement ran (a database restart, a network cut) leaves its
    outcome unknown: PostgreSQL may have committed it and lost only the reply. Answered 451,
    the sender would send the message again, and it would be delivered twice. So the row is
    looked for, on a new connection, by the exact ``created_at`` the INSERT carried and the
    client's address and port (one SMTP session): indexed, and unique in practice. While the
    database stays unreachable this is tried again until HISP_SMTP_DB_TIMEOUT has passed (the
    client waits ten minutes for the DATA reply, RFC 5321 section 4.5.3.2.6); after that the
    outcome stays unknown and the 451 stands (logged). An error on a connection that still
    works (a statement timeout, a full disk) rolled back for certain: no look needed."""
    if connection.in_atomic_block:
        return False  # an outer transaction's: nothing of it is committed yet
    if connection.connection is None or connection.is_usable():
        return False  # never connected, or the statement failed and was rolled back
    deadline = time.monotonic() + settings.HISP_SMTP_DB_TIMEOUT.total_seconds()
    while True:
        connection.close()
        try:
            found = (
                Message.objects.filter(
                    direction=Message.Direction.INBOUND,
                    created_at=message.created_at,
                    peer=message.peer,
                )
                .values_list("pk", flat=True)
                .first()
            )
        except DatabaseError:
            if time.monotonic() + UNCONFIRMED_POLL >= deadline:
                log.warning("a received message's commit is unconfirmed and the database is "
                            "still unreachable: answering 451; if it did commit, the sender's "
                            "retry is a second copy")
                return False
            time.sleep(UNCONFIRMED_POLL)
            continue
        if found is None:
            return False
        message.pk = found
        message._state.adding = False
        message._state.db = connection.alias
        log.warning("message %s: its commit's confirmation was lost with the connection; "
                    "it is stored, and accepted", found)
        return True


def single_statement_writes() -> bool:
    """Whether the hot paths write a row and its audit trail as one statement of data-modifying
    CTEs (PostgreSQL); elsewhere (SQLite, the quick start) they use a transaction of ORM
    writes with the same result."""
    return connection.vendor == "postgresql"


def _store_with_audit(
    message: Message, *, actor: str, client: str | None, detail: dict[str, int]
) -> None:
    insert_sql, insert_params = rows.insert_sql(Message, [message], returning_pk=True)
    audit_sql, audit_params = audit.appended_for(
        "stored", action=RECEIVED, object_type=Message._meta.label_lower, actor=actor,
        client=client, **detail,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH stored AS ({insert_sql}), audited AS ({audit_sql}) SELECT id FROM stored",  # noqa: S608
            [*insert_params, *audit_params],
        )
        (message.pk,) = cursor.fetchone()
    message._state.adding = False
    message._state.db = connection.alias


def _ip(peer: str) -> str | None:
    host = peer.rsplit(":", 1)[0].strip("[]") if peer.count(":") <= 1 else peer
    try:
        import ipaddress

        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def claim_message(pk: int, *, from_state: str) -> Message | None:
    """Take the lease on one message; None when another worker has it or it is done.

    One statement: the conditional UPDATE returns the row it claimed (``RETURNING``, PostgreSQL
    and SQLite >= 3.35), instead of an UPDATE and a SELECT on every task. The raw bytes come in
    a second query (:func:`_load_raw`): in the UPDATE's text-format result they would arrive
    as hex, twice their size in the worker's memory before decoding (50 MB for a 25 MB message).
    """
    sql, fields = _claim_statement()
    ops = connection.ops
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [Message.State.PROCESSING, ops.adapt_datetimefield_value(timezone.now()), pk,
             from_state],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    values = []
    for field, value in zip(fields, row, strict=True):
        col, converters = _converters(field)
        for convert in converters:
            value = convert(value, col, connection)
        values.append(value)
    message = Message.from_db(connection.alias, [f.attname for f in fields], values)
    _load_raw(message)
    return message


@functools.cache
def _claim_statement() -> tuple[str, tuple[Field, ...]]:
    """The claiming UPDATE, returning every column but ``raw``, and those columns' fields."""
    qn = connection.ops.quote_name
    meta = Message._meta
    fields = tuple(f for f in meta.concrete_fields if f.attname != "raw")
    # Only quoted identifiers from the model go into the text; every value is a parameter.
    sql = (
        f"UPDATE {qn(meta.db_table)} SET {qn('state')} = %s, {qn('claimed_at')} = %s "  # noqa: S608
        f"WHERE {qn(str(meta.pk.column))} = %s AND {qn('state')} = %s "
        f"RETURNING {', '.join(qn(f.column) for f in fields)}"
    )
    return sql, fields


@functools.cache
def _converters(field: Field) -> tuple[Any, tuple[Any, ...]]:
    """The column expression and what Django's compiler applies to a column it reads (the
    backend's, then the field's: JSON text to objects, SQLite's datetimes), for rows read
    through a plain cursor; worked out once per process, not per message."""
    col = field.get_col(Message._meta.db_table)
    return col, (*connection.ops.get_db_converters(col), *field.get_db_converters(connection))


@functools.cache
def _raw_statement() -> str:
    qn = connection.ops.quote_name
    return (
        f"SELECT {qn('raw')} FROM {qn(Message._meta.db_table)} "  # noqa: S608
        f"WHERE {qn(str(Message._meta.pk.column))} = %s"
    )


def _load_raw(message: Message) -> None:
    """Read the message's bytes as bytes: on PostgreSQL in binary format (no hex text)."""
    sql = _raw_statement()
    with connection.cursor() as cursor:
        if _binary_results(cursor.cursor):
            with connection.wrap_database_errors:  # Django's exceptions, as through the wrapper
                cursor.cursor.execute(sql, [message.pk], binary=True)
        else:
            cursor.execute(sql, [message.pk])
        row = cursor.fetchone()
    if row is None:  # nothing deletes messages; should anything, the claim fails cleanly
        raise Message.DoesNotExist(f"message {message.pk} is gone")
    message.raw = bytes(row[0])


def _binary_results(cursor: object) -> bool:
    """psycopg 3 returns binary results, except from a client-side binding cursor
    (``server_side_binding`` turned off in the database options)."""
    if connection.vendor != "postgresql":
        return False
    import psycopg

    return isinstance(cursor, psycopg.Cursor) and not isinstance(cursor, psycopg.ClientCursor)


def finish_message(message: Message, *, state: str, **fields: Any) -> bool:
    """Leave PROCESSING for ``state``, only if our lease is still the current one. Called inside
    the transaction that wrote the results, so results and state commit together or not at all."""
    done = Message.objects.filter(
        pk=message.pk, state=Message.State.PROCESSING, claimed_at=message.claimed_at
    ).update(state=state, claimed_at=None, **fields)
    return bool(done)


def release_message(message: Message, *, back_to: str, **fields: Any) -> bool:
    """Give the lease back (``back_to`` the waiting state). ``updated_at`` records when, which
    is where the sweeper counts a planned retry's delay from."""
    return bool(
        Message.objects.filter(
            pk=message.pk, state=Message.State.PROCESSING, claimed_at=message.claimed_at
        ).update(state=back_to, claimed_at=None, updated_at=timezone.now(), **fields)
    )


REQUEUE_WAIT_CAP = timedelta(minutes=30)
# A message or delivery whose lease expired this many times with no result is given up (a
# message that crashes or hangs every worker must not take them all down, one lease at a time).
MAX_ABANDONED = 3


def abandoned_too_often(row: Message | Delivery) -> bool:
    return row.abandoned >= MAX_ABANDONED


def _due(now: datetime) -> Q:
    """Waiting messages whose task may have been lost: untouched for the grace period, counted
    for a message waiting out a transient failure from its planned retry time (its countdown
    task normally runs then; re-queueing it sooner would cut its backoff short)."""
    grace = queue_grace()
    # A message re-queued before waits, since that touch, as long as it had waited until then
    # (capped): under a backlog longer than the grace period its task is most likely still in
    # the queue, and re-queueing every grace period would add a duplicate task per message
    # each time, more load just when the workers are behind. Lost tasks are still re-queued,
    # at most REQUEUE_WAIT_CAP late.
    waited_before = Least(
        ExpressionWrapper(F("updated_at") - F("created_at"), output_field=DurationField()),
        Value(REQUEUE_WAIT_CAP, output_field=DurationField()),
    )
    due = Q(attempts=0, updated_at__lt=now - grace) & Q(
        updated_at__lt=ExpressionWrapper(
            Value(now, output_field=DateTimeField()) - waited_before,
            output_field=DateTimeField(),
        )
    )
    for attempts in range(1, MAX_RETRY_ATTEMPTS + 1):
        wait = retry_delay(attempts) + grace
        count = Q(attempts=attempts) if attempts < MAX_RETRY_ATTEMPTS else Q(attempts__gte=attempts)
        due |= count & Q(updated_at__lt=now - wait)
    return due


def sweep() -> dict[str, int]:
    """Return expired claims to the queue and re-queue work that was never picked up.

    Safe to run any time and from several schedulers at once: every step is a conditional
    UPDATE, and a task queued twice finds the claim taken the second time.
    """
    now = timezone.now()
    expired = now - claim_lease()
    stale = now - queue_grace()
    lost_or_due = _due(now)
    counts = {"incoming": 0, "outgoing": 0, "deliveries": 0}
    for direction, back_to, task_name, key in (
        (Message.Direction.INBOUND, Message.State.RECEIVED, "process_incoming", "incoming"),
        (Message.Direction.OUTBOUND, Message.State.QUEUED, "process_outgoing", "outgoing"),
    ):
        lost = list(
            Message.objects.filter(
                direction=direction, state=Message.State.PROCESSING, claimed_at__lt=expired
            ).values_list("pk", "claimed_at")
        )
        for pk, claimed in lost:
            # Counted: the worker that held it died, hung or lost the database. A message that
            # does this every time is given up after MAX_ABANDONED (see abandoned_too_often).
            Message.objects.filter(
                pk=pk, state=Message.State.PROCESSING, claimed_at=claimed
            ).update(state=back_to, claimed_at=None, updated_at=now,
                     abandoned=F("abandoned") + 1)
        waiting = Message.objects.filter(direction=direction, state=back_to).filter(
            lost_or_due | Q(pk__in=[pk for pk, _ in lost])
        )
        for pk in waiting.values_list("pk", flat=True):
            # Touch the row so the next sweep does not queue it again straight away.
            if Message.objects.filter(pk=pk, state=back_to).update(updated_at=now):
                enqueue(task_name, pk)
                counts[key] += 1
    # Deliveries: an expired lease on an attempt, a retry (or a pending-certificate re-check)
    # that fell due, or a queued attempt whose task was lost.
    due = Delivery.objects.filter(
        message__direction=Message.Direction.OUTBOUND,
        state__in=[
            Delivery.State.QUEUED,
            Delivery.State.DEFERRED,
            Delivery.State.PENDING_CERTIFICATE,
        ],
    ).filter(
        Q(claimed_at__lt=expired)
        | Q(claimed_at__isnull=True, next_attempt_at__lte=now)
        # Only protected ones: a delivery still waiting for its message's protection (a
        # transient failure being waited out) is the message's business, re-queued above.
        | Q(claimed_at__isnull=True, next_attempt_at__isnull=True, updated_at__lt=stale,
            wire__isnull=False)
        # A held delivery has no copy yet: its queued re-check lost, it matched nothing above
        # and waited for ever, its sender never told the outcome.
        | Q(state=Delivery.State.PENDING_CERTIFICATE, claimed_at__isnull=True,
            next_attempt_at__isnull=True, updated_at__lt=stale)
    )
    for pk in due.values_list("pk", flat=True):
        # Clearing next_attempt_at hands the row to the "queued but lost" rule above, so a
        # due retry is queued once per grace period, not on every sweep. An expired claim is
        # an abandoned attempt, counted as for messages.
        touched = Delivery.objects.filter(pk=pk, claimed_at__lt=expired).update(
            claimed_at=None, next_attempt_at=None, updated_at=now, abandoned=F("abandoned") + 1
        ) or Delivery.objects.filter(pk=pk, claimed_at__isnull=True).update(
            next_attempt_at=None, updated_at=now
        )
        if touched:
            enqueue("deliver", pk)
            counts["deliveries"] += 1
    if any(counts.values()):
        log.info("sweeper re-queued %s", counts)
    return counts
