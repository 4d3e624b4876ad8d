"""Inbound processing: one received message, claimed, opened by the agent, delivered per
recipient (or rejected with the agent's reason), with the MDNs the Applicability Statement
requires. MDNs and DSNs addressed to our users update delivery tracking instead of a mailbox."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

import agent
from agent.errors import AgentError, Code
from agent.types import Environment
from hisp import mailtext
from hisp.agent_env import certificate_id
from hisp.certificates import fingerprint
from hisp.models import Address, AuditEvent, Delivery, DeliveryEvent, MailboxEntry, Message
from hisp.services import audit, notices, rows, tracking
from hisp.services.mail import (
    abandoned_too_often,
    claim_message,
    enqueue,
    find_address,
    finish_message,
    release_message,
    retry_delay,
    single_statement_writes,
)

log = logging.getLogger(__name__)

MAILBOX_DISABLED = "mailbox-disabled"


class LeaseLost(Exception):
    """Another worker took over this message (our lease expired): roll back our results."""


def signer_organisation(certificate: x509.Certificate) -> str:
    """The organisation (O) in a signing certificate's subject, as the trust banner names it."""
    try:
        names = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    except ValueError:  # a subject that does not decode
        return ""
    return mailtext.printable(str(names[0].value)[:256]) if names else ""


def _anchor_id(result: agent.Unprotected, delivered: list[_Outcome]) -> int | None:
    """The stored anchor every delivered recipient's domain trusted the signer through, or None
    when they went through different ones (the banner then names none rather than a wrong one)."""
    anchors = {
        fingerprint(result.delivered[o.address.address]) for o in delivered if o.address is not None
    }
    return certificate_id(anchors.pop()) if len(anchors) == 1 else None


def signer_name(certificate: x509.Certificate) -> str:
    """The address or domain a signing certificate is bound to (Applicability Statement 4.0)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return mailtext.printable(certificate.subject.rfc4514_string()[:320])
    emails = san.get_values_for_type(x509.RFC822Name)
    dns = san.get_values_for_type(x509.DNSName)
    # A partner's certificate may name more than what binds it (a NUL in another SAN name):
    # the stored text never carries a control character into the database.
    return mailtext.printable((emails or dns or [certificate.subject.rfc4514_string()])[0][:320])


def process(pk: int) -> str:
    message = claim_message(pk, from_state=Message.State.RECEIVED)
    if message is None:
        return "not-claimed"
    if abandoned_too_often(message):
        # Every worker that took it died or hung: give it up without touching its content
        # again (no header parsing either, in case that is what kills them).
        log.error("message %s: abandoned %s times, rejected", pk, message.abandoned)
        _reject(message, AgentError(Code.MALFORMED, "processing was cut short repeatedly"), None)
        return "rejected:abandoned"
    try:
        return _process(message)
    except LeaseLost:
        log.warning("message %s: lease lost, results discarded", pk)
        return "lease-lost"
    except Exception:
        # A bug or input nothing anticipated: never a silent drop, never an endless loop.
        log.exception("message %s: processing failed", pk)
        # Retried like a transient failure (a database hiccup looks the same from here),
        # within the same period; what fails for that long is given up.
        if _retry_time_left(message) > timedelta(0):
            _retry_later(message, AgentError(Code.MALFORMED, "processing error", permanent=False))
            return "retry"
        _reject(message, AgentError(Code.MALFORMED, "processing failed repeatedly"), None)
        return "rejected:error"


def process_each(pks: list[int]) -> list[str]:
    """:func:`process` for each message in turn. A failure that escapes one (the database gone
    away while claiming it) leaves that message to the sweeper and does not stop the others."""
    outcomes = []
    for pk in pks:
        try:
            outcomes.append(process(pk))
        except Exception:
            log.exception(
                "message %s: could not be processed now; the sweeper will re-queue it", pk
            )
            outcomes.append("error")
            # As between tasks: a connection the error left broken is dropped, so the rest of
            # the batch reconnects instead of failing on it too.
            close_old_connections()
    return outcomes


def _hosted(envelope_to: list[str]) -> dict[str, Address]:
    """Envelope recipient -> hosted Address row (any status; delivery decides what to do)."""
    found: dict[str, Address] = {}
    for rcpt in envelope_to:
        row = find_address(rcpt)
        if row is not None:
            found[rcpt] = row
    return found


def _process(message: Message) -> str:
    from hisp.agent_env import build_environment

    # Only the header block of the received bytes is read here; the agent is handed the only
    # reference to the rest, so it frees them once it has decoded the envelope (a 25 MB
    # message is otherwise held in every one of its forms at once).
    head = mailtext.head_of(bytes(message.raw))
    hosted = _hosted(list(message.envelope_to))
    env = build_environment()  # one per task: the MDNs are protected with it too
    try:
        if not hosted:
            raise AgentError(Code.NO_DECRYPTION_KEY, "no hosted recipient")
        result = agent.unprotect(
            _take_raw(message),
            recipients=[row.address for row in hosted.values()],
            env=env,
            at=timezone.now(),
        )
    except AgentError as exc:
        if not exc.permanent and _retry_time_left(message) > timedelta(0):
            _retry_later(message, exc)
            return "retry"
        _reject(message, exc, _outer(head))
        return f"rejected:{exc.code}"

    # The signer is checked per recipient domain (each trusts its own anchors), so a failure
    # that may pass later (its CRL or OCSP responder unreachable) comes back per recipient.
    # The whole message waits for it: delivering to the others now would need a second,
    # partial delivery later, and the cause is nearly always the signer's, shared by all.
    transient = [exc for exc in result.rejected.values() if not exc.permanent]
    if transient and _retry_time_left(message) > timedelta(0):
        _retry_later(message, transient[0])
        return "retry"

    report = mailtext.is_report(result.message)
    if report is not None:
        if not any(row.address in result.delivered for row in hosted.values()):
            # A report changes the state of our outbound mail, so its signer must be trusted
            # by a hosted recipient's domain like any other mail; decrypting is not enough.
            exc = next(iter(result.rejected.values()), None) or AgentError(
                Code.NO_DECRYPTION_KEY, "no hosted recipient"
            )
            _reject(message, exc, _outer(head))
            return f"rejected:{exc.code}"
        return tracking.handle_report(message, result, report, facts=_report_facts(result))
    return _deliver(message, result, hosted, env)


def _signed_by(result: agent.Unprotected) -> dict[str, object]:
    name, organisation, print_ = _signer_facts(result.signer.public_bytes(Encoding.DER))
    return {"signer": name, "signer_organisation": organisation, "signer_fingerprint": print_}


@lru_cache(maxsize=1024)
def _signer_facts(der: bytes) -> tuple[str, str, str]:
    """Name, organisation and fingerprint of a signing certificate, by its DER: a partner signs
    every message with the same one, and each reading costs some 40 us of the hot path."""
    certificate = x509.load_der_x509_certificate(der)
    return signer_name(certificate), signer_organisation(certificate), fingerprint(certificate)


def _report_facts(result: agent.Unprotected) -> dict[str, object]:
    """What the message log and console show of a received MDN or DSN: its signer and its
    header fields (read from the header block alone: a report's body is not mail to file)."""
    facts = _signed_by(result)
    summary = _outer(mailtext.head_of(result.message))
    if summary is not None:
        facts.update(
            message_id=summary.message_id[:998],
            header_from=summary.sender[:998],
            header_to=list(summary.to + summary.cc),
            subject=summary.subject[:998],
        )
    return facts


def _take_raw(message: Message) -> bytes:
    """The received bytes, taken from the instance: the field becomes deferred again (read
    from the database should anything later ask for it), so no reference stays behind."""
    raw = bytes(message.raw)
    del message.raw
    return raw


def _outer(head: bytes) -> mailtext.Summary | None:
    """The clear outer headers (``head``: the received header block), for the message log of
    a rejected message."""
    try:
        return mailtext.summarise(head + b"\r\n")
    except Exception:  # unparseable headers: the log shows the envelope only
        return None


def _retry_time_left(message: Message) -> timedelta:
    """How much of HISP_INBOUND_RETRY_PERIOD is left for a transient failure: counted from
    when the message arrived, so an outage of the signer's revocation service shorter than
    that costs a delay, not the message (which, rejected, would get no MDN and be reported
    failed to its sender an hour later)."""
    return message.created_at + settings.HISP_INBOUND_RETRY_PERIOD - timezone.now()


def _retry_later(message: Message, exc: AgentError) -> None:
    from hisp.tasks.mail import process_incoming

    attempts = message.attempts + 1
    if not release_message(message, back_to=Message.State.RECEIVED, attempts=attempts):
        return  # our lease expired: whoever holds it now decides
    # The usual backoff, but the last try at the end of the period rather than after it.
    wait = min(retry_delay(attempts), max(_retry_time_left(message), timedelta(seconds=10)))
    delay = wait.total_seconds()
    log.info("message %s: transient %s, retry in %ss", message.pk, exc.code, delay)
    transaction.on_commit(
        lambda: process_incoming.apply_async((message.pk,), countdown=delay), robust=True
    )


def _reject(message: Message, exc: AgentError, outer: mailtext.Summary | None) -> None:
    """Failed security or trust: no MDN at all (Applicability Statement 3.0), only the log."""
    with transaction.atomic():
        for rcpt in message.envelope_to:
            delivery, _ = Delivery.objects.get_or_create(
                message=message,
                recipient=rcpt,
                defaults={"state": Delivery.State.REJECTED, "detail": str(exc.code)},
            )
            DeliveryEvent.objects.create(
                delivery=delivery, state=Delivery.State.REJECTED, detail=str(exc.code)
            )
        fields: dict[str, object] = {"reason": str(exc.code)}
        if outer is not None:
            fields.update(
                message_id=outer.message_id[:998],
                header_from=outer.sender[:998],
                header_to=list(outer.to + outer.cc),
            )
        if not finish_message(message, state=Message.State.REJECTED, **fields):
            raise LeaseLost
        _courtesy(message, exc, outer)
        audit.record(
            action="message.rejected",
            obj=message,
            actor="system",
            reason=str(exc.code),
            recipients=len(message.envelope_to),
        )
    log.info("message %s rejected: %s", message.pk, exc.code)


_UNSECURED = frozenset({Code.NOT_ENCRYPTED, Code.NOT_SIGNED})


def _courtesy(message: Message, exc: AgentError, outer: mailtext.Summary | None) -> None:
    if not settings.HISP_COURTESY_NOTICES or exc.code not in _UNSECURED or outer is None:
        return
    raw = bytes(message.raw)
    sender = outer.sender_address
    if not sender or mailtext.is_auto_generated(raw, envelope_from=message.envelope_from):
        return
    if sender.lower() != message.envelope_from.lower():
        return  # a forged From must not turn us into a reflector
    reporter = next(iter(_hosted(list(message.envelope_to)).values()), None)
    if reporter is not None and reporter.status == Address.Status.ACTIVE:
        notices.queue_courtesy_notice(inbound=message, reporter=reporter, to=sender)


@dataclass(frozen=True)
class _Outcome:
    recipient: str  # as in the envelope
    address: Address | None  # the hosted address, if any
    state: str
    detail: str


@dataclass
class _Report:
    """An MDN to send for one hosted recipient, built (and usually protected) before the
    transaction that delivers the message, so that transaction stays short."""

    reporter: Address
    disposition: str
    message_id: str
    raw: bytes
    wire: bytes | None = None


def _outcomes(
    message: Message, result: agent.Unprotected, hosted: dict[str, Address]
) -> list[_Outcome]:
    outcomes = []
    seen: set[object] = set()
    for rcpt in message.envelope_to:
        row = hosted.get(rcpt)
        # The same mailbox named twice (repeated RCPT, or in another case) is one delivery.
        key = row.pk if row is not None else rcpt.lower()
        if key in seen:
            continue
        seen.add(key)
        address = row.address if row is not None else rcpt
        if row is None or address not in result.delivered and address not in result.rejected:
            state, detail = Delivery.State.REJECTED, str(Code.NO_DECRYPTION_KEY)
        elif address in result.rejected:
            state, detail = Delivery.State.REJECTED, str(result.rejected[address].code)
        elif row.status != Address.Status.ACTIVE:
            state, detail = Delivery.State.REJECTED, MAILBOX_DISABLED
        else:
            state, detail = Delivery.State.DELIVERED, ""
        outcomes.append(_Outcome(rcpt, row, state, detail))
    return outcomes


def _reports(
    outcomes: list[_Outcome],
    result: agent.Unprotected,
    summary: mailtext.Summary,
    timely: bool,
    env: Environment,
) -> list[_Report]:
    """The MDNs the Applicability Statement asks for, built and protected (outside any
    transaction: protection reads keys and certificates and costs RSA operations)."""
    from hisp.services import outbound

    # (reporter, envelope recipient, disposition, final-delivery field, failure)
    wanted: list[tuple[Address, str, str, bool, str | None]] = []
    for outcome in outcomes:
        if outcome.address is None:
            continue
        # RFC 3798 3.2.3: the recipient as the sender named it in RCPT TO (to the sender's
        # HISP a local part is case-sensitive, RFC 5321 2.4); our spelling of the mailbox is
        # the Final-Recipient. A bare "Postmaster" (RFC 5321 4.1.1.3) is no address to quote.
        rcpt = outcome.recipient if "@" in outcome.recipient else outcome.address.address
        if outcome.state == Delivery.State.DELIVERED:
            wanted.append((outcome.address, rcpt, "processed", False, None))
            if timely:
                wanted.append((outcome.address, rcpt, "dispatched", True, None))
        elif outcome.detail == MAILBOX_DISABLED:
            # Validated but undeliverable: the sender learns it failed (IG section 3.4).
            wanted.append((outcome.address, rcpt, "failed", False, "mailbox unavailable"))
    reports = []
    now = timezone.now()
    for reporter, rcpt, disposition, final_delivery, failure in wanted:
        message_id, raw = notices.build_mdn(
            reporter=reporter,
            to=result.sender,
            original_message_id=summary.message_id,
            original_recipient=rcpt,
            disposition=disposition,
            subject=summary.subject,
            final_delivery=final_delivery,
            failure=failure,
        )
        report = _Report(reporter, disposition, message_id, raw)
        try:
            report.wire = outbound.protect_for(
                raw=raw, sender=reporter.address, recipient=result.sender, now=now, env=env
            )
        except Exception:
            # Never lose the delivery over its MDN: the outbound pipeline tries again.
            log.exception("MDN %s: protection failed; queued for the pipeline", message_id)
        reports.append(report)
    return reports


def _deliver(
    message: Message, result: agent.Unprotected, hosted: dict[str, Address], env: Environment
) -> str:
    inner = result.message
    summary = mailtext.summarise(inner)
    try:
        timely = mailtext.wants_final_delivery(inner)
    except mailtext.OptionsMalformed:
        # Still a processed MDN, but never a dispatched MDN carrying the extension field.
        timely = False
    outcomes = _outcomes(message, result, hosted)
    # The null reverse-path (stored as "") marks auto-generated mail that must never be
    # answered (RFC 5321 section 4.5.5, RFC 3834 section 2): no MDN, so two HISPs cannot loop.
    reports = _reports(outcomes, result, summary, timely, env) if message.envelope_from else []
    delivered = [o for o in outcomes if o.state == Delivery.State.DELIVERED]
    now = timezone.now()
    to_send: list[Delivery] = []
    with transaction.atomic():
        # Plain inserts: we hold the lease, and the unique (message, recipient) constraint
        # would roll the whole delivery back if another worker had raced us anyway. One
        # multi-row INSERT per table (the MDN messages first: their deliveries and events go
        # in with the recipients'), so the round trips do not grow with the reports.
        mdn_messages = rows.insert(
            Message,
            [
                notices.mdn_message(
                    inbound=message,
                    reporter=report.reporter,
                    to=result.sender,
                    message_id=report.message_id,
                    raw=report.raw,
                    disposition=report.disposition,
                    subject=summary.subject,
                    wire=report.wire,
                )
                for report in reports
            ],
        )
        written = rows.insert(
            Delivery,
            [
                Delivery(message=message, recipient=o.recipient, state=o.state, detail=o.detail)
                for o in outcomes
            ]
            + [
                notices.mdn_delivery(m, to=result.sender, wire=report.wire, claimed_at=now)
                for m, report in zip(mdn_messages, reports, strict=True)
            ],
        )
        deliveries, stored = written[: len(outcomes)], written[len(outcomes) :]
        events = [DeliveryEvent(delivery=d, state=d.state, detail=d.detail) for d in deliveries] + [
            DeliveryEvent(delivery=d, state=Delivery.State.QUEUED, detail=report.disposition)
            for d, report in zip(stored, reports, strict=True)
        ]
        entries = [
            MailboxEntry(
                address=o.address,
                message=message,
                sender=summary.sender[:998],
                recipients=list(summary.to + summary.cc),
                subject=summary.subject[:998],
                snippet=summary.snippet,
                body_text=summary.body_text,
                has_attachments=bool(summary.attachments),
                received_at=now,
            )
            for o in delivered
        ]
        final = Message.State.DELIVERED if delivered else Message.State.REJECTED
        finished = {
            "state": final,
            "reason": "" if delivered else _reason(outcomes),
            "content": inner,
            "message_id": summary.message_id[:998],
            "header_from": summary.sender[:998],
            "header_to": list(summary.to + summary.cc),
            "subject": summary.subject[:998],
            **_signed_by(result),
            "anchor_id": _anchor_id(result, delivered),
        }
        if single_statement_writes():
            audits = _delivery_audits(message, deliveries)
            kept = _write_results(message, events, audits, entries, finished)
        else:
            DeliveryEvent.objects.bulk_create(events)
            for delivery in deliveries:
                audit.record(
                    action=_audit_action(delivery),
                    obj=delivery,
                    actor="system",
                    reason=delivery.detail or None,
                    message=message.pk,
                )
            MailboxEntry.objects.bulk_create(entries)
            kept = finish_message(message, **finished)
        if not kept:
            raise LeaseLost
        for delivery in stored:
            if delivery.wire is None:
                enqueue("process_outgoing", delivery.message.pk)
            else:
                to_send.append(delivery)
    log.info("message %s: delivered to %s recipient(s)", message.pk, len(delivered))
    _send_reports(to_send)
    return f"delivered:{len(delivered)}"


def _audit_action(delivery: Delivery) -> str:
    return "message.delivered" if delivery.state == Delivery.State.DELIVERED else "message.rejected"


def _delivery_audits(message: Message, deliveries: list[Delivery]) -> list[AuditEvent]:
    """What ``audit.record`` appends for each recipient's outcome, as unsaved rows."""
    return [
        AuditEvent(
            actor_label=audit.SYSTEM,
            action=_audit_action(delivery),
            object_type=Delivery._meta.label_lower,
            object_id=str(delivery.pk),
            detail={"reason": delivery.detail or None, "message": message.pk},
        )
        for delivery in deliveries
    ]


def _write_results(
    message: Message,
    events: list[DeliveryEvent],
    audits: list[AuditEvent],
    entries: list[MailboxEntry],
    finished: dict[str, object],
) -> bool:
    """The events, audit events, mailbox entries and the message's final state as one
    statement (PostgreSQL), inside the caller's transaction: False when our lease was lost
    (the caller raises, and the transaction rolls back what this statement wrote)."""
    update_sql, update_params = rows.update_sql(
        Message,
        {**finished, "claimed_at": None},
        where={
            "pk": message.pk,
            "state": Message.State.PROCESSING,
            "claimed_at": message.claimed_at,
        },
    )
    parts = [(f"fin AS ({update_sql} RETURNING 1)", update_params)]
    for name, model, objs in (
        ("events", DeliveryEvent, events),
        ("audited", AuditEvent, audits),
        ("filed", MailboxEntry, entries),
    ):
        if objs:
            sql, params = rows.insert_sql(model, objs)
            parts.append((f"{name} AS ({sql})", params))
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH " + ", ".join(sql for sql, _ in parts) + " SELECT count(*) FROM fin",  # noqa: S608
            [p for _, params in parts for p in params],
        )
        (count,) = cursor.fetchone()
    return bool(count)


def _send_reports(deliveries: list[Delivery]) -> None:
    """Send the MDNs now, in this task: no queue round trip on the hot path. They are committed
    (protected, claimed by us) already, so if this fails or the worker dies the sweeper sends
    them once the claim expires."""
    from hisp.services import outbound

    for delivery in deliveries:
        try:
            outbound.send_claimed(delivery)
        except Exception:
            log.exception(
                "MDN delivery %s: sending inline failed; the sweeper will retry", delivery.pk
            )


def _reason(outcomes: list[_Outcome]) -> str:
    details = {o.detail for o in outcomes}
    return sorted(details)[0] if len(details) == 1 else "rejected"
