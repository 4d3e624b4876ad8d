"""Inbound processing: one received message, claimed, opened by the agent, delivered per
recipient (or rejected with the agent's reason), with the MDNs the Applicability Statement
requires. MDNs and DSNs addressed to our users update delivery tracking instead of a mailbox."""

from __future__ import annotations

import logging

from cryptography import x509
from django.conf import settings
from django.db import transaction
from django.utils import timezone

import agent
from agent.errors import AgentError, Code
from hisp import mailtext
from hisp.models import Address, Delivery, DeliveryEvent, MailboxEntry, Message
from hisp.services import audit, notices, tracking
from hisp.services.mail import claim_message, find_address, finish_message, release_message

log = logging.getLogger(__name__)

MAX_TRANSIENT_ATTEMPTS = 5
MAILBOX_DISABLED = "mailbox-disabled"


class LeaseLost(Exception):
    """Another worker took over this message (our lease expired): roll back our results."""


def signer_name(certificate: x509.Certificate) -> str:
    """The address or domain a signing certificate is bound to (Applicability Statement 4.0)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return certificate.subject.rfc4514_string()[:320]
    emails = san.get_values_for_type(x509.RFC822Name)
    dns = san.get_values_for_type(x509.DNSName)
    return (emails or dns or [certificate.subject.rfc4514_string()])[0][:320]


def process(pk: int) -> str:
    message = claim_message(pk, from_state=Message.State.RECEIVED)
    if message is None:
        return "not-claimed"
    try:
        return _process(message)
    except LeaseLost:
        log.warning("message %s: lease lost, results discarded", pk)
        return "lease-lost"
    except Exception:
        # A bug or input nothing anticipated: never a silent drop, never an endless loop.
        log.exception("message %s: processing failed", pk)
        if message.attempts + 1 < MAX_TRANSIENT_ATTEMPTS:
            _retry_later(message, AgentError(Code.MALFORMED, "processing error", permanent=False))
            return "retry"
        _reject(message, AgentError(Code.MALFORMED, "processing failed repeatedly"), None)
        return "rejected:error"


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

    raw = bytes(message.raw)
    hosted = _hosted(list(message.envelope_to))
    try:
        if not hosted:
            raise AgentError(Code.NO_DECRYPTION_KEY, "no hosted recipient")
        result = agent.unprotect(
            raw,
            recipients=[row.address for row in hosted.values()],
            env=build_environment(),
            at=timezone.now(),
        )
    except AgentError as exc:
        if not exc.permanent and message.attempts + 1 < MAX_TRANSIENT_ATTEMPTS:
            _retry_later(message, exc)
            return "retry"
        _reject(message, exc, _outer(raw))
        return f"rejected:{exc.code}"

    report = mailtext.is_report(result.message)
    if report is not None:
        return tracking.handle_report(message, result, report)
    return _deliver(message, result, hosted)


def _outer(raw: bytes) -> mailtext.Summary | None:
    """The clear outer headers, for the message log of a rejected message."""
    try:
        return mailtext.summarise(mailtext.head_of(raw) + b"\r\n")
    except Exception:  # unparseable headers: the log shows the envelope only
        return None


def _retry_later(message: Message, exc: AgentError) -> None:
    from hisp.tasks.mail import process_incoming

    Message.objects.filter(pk=message.pk).update(attempts=message.attempts + 1)
    release_message(message, back_to=Message.State.RECEIVED)
    delay = 60 * 2**message.attempts
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


def _deliver(message: Message, result: agent.Unprotected, hosted: dict[str, Address]) -> str:
    inner = result.message
    summary = mailtext.summarise(inner)
    try:
        timely = mailtext.wants_final_delivery(inner)
    except mailtext.OptionsMalformed:
        # Still a processed MDN, but never a dispatched MDN carrying the extension field.
        timely = False
    now = timezone.now()
    delivered = 0
    reports: list[Message] = []
    with transaction.atomic():
        for rcpt in message.envelope_to:
            row = hosted.get(rcpt)
            address = row.address if row is not None else rcpt
            if row is None or address not in result.delivered and address not in result.rejected:
                state, detail = Delivery.State.REJECTED, str(Code.NO_DECRYPTION_KEY)
            elif address in result.rejected:
                state, detail = Delivery.State.REJECTED, str(result.rejected[address].code)
            elif row.status != Address.Status.ACTIVE:
                state, detail = Delivery.State.REJECTED, MAILBOX_DISABLED
            else:
                state, detail = Delivery.State.DELIVERED, ""
            # Plain create: we hold the lease, and the unique (message, recipient) constraint
            # would roll the whole delivery back if another worker had raced us anyway.
            delivery = Delivery.objects.create(
                message=message, recipient=rcpt, state=state, detail=detail
            )
            DeliveryEvent.objects.create(delivery=delivery, state=state, detail=detail)
            audit.record(
                action="message.delivered" if state == Delivery.State.DELIVERED
                else "message.rejected",
                obj=delivery,
                actor="system",
                reason=detail or None,
                message=message.pk,
            )
            if row is None:
                continue
            if state == Delivery.State.DELIVERED:
                delivered += 1
                MailboxEntry.objects.create(
                    address=row,
                    message=message,
                    sender=summary.sender[:998],
                    recipients=list(summary.to + summary.cc),
                    subject=summary.subject[:998],
                    snippet=summary.snippet,
                    body_text=summary.body_text,
                    has_attachments=bool(summary.attachments),
                    received_at=now,
                )
                reports.append(_mdn(message, row, result, summary, "processed"))
                if timely:
                    reports.append(
                        _mdn(message, row, result, summary, "dispatched", final_delivery=True)
                    )
            elif detail == MAILBOX_DISABLED:
                # Validated but undeliverable: the sender learns it failed (IG section 3.4).
                reports.append(
                    _mdn(message, row, result, summary, "failed", failure="mailbox unavailable")
                )
        final = Message.State.DELIVERED if delivered else Message.State.REJECTED
        reason = "" if delivered else _reason(message)
        if not finish_message(
            message,
            state=final,
            reason=reason,
            content=inner,
            message_id=summary.message_id[:998],
            header_from=summary.sender[:998],
            header_to=list(summary.to + summary.cc),
            subject=summary.subject[:998],
            signer=signer_name(result.signer),
        ):
            raise LeaseLost
    log.info("message %s: delivered to %s recipient(s)", message.pk, delivered)
    _send_reports(reports)
    return f"delivered:{delivered}"


def _send_reports(reports: list[Message]) -> None:
    """Protect and send the MDNs now, in this task: no queue round trip on the hot path. They
    are committed already, so if this fails or the worker dies the sweeper sends them."""
    from hisp.services import outbound

    for report in reports:
        try:
            outbound.process(report.pk)
        except Exception:
            log.exception("MDN %s: sending inline failed; the sweeper will retry", report.pk)


def _reason(message: Message) -> str:
    details = set(
        Delivery.objects.filter(message=message).values_list("detail", flat=True)
    )
    return sorted(details)[0] if len(details) == 1 else "rejected"


def _mdn(
    message: Message,
    reporter: Address,
    result: agent.Unprotected,
    summary: mailtext.Summary,
    disposition: str,
    *,
    final_delivery: bool = False,
    failure: str | None = None,
) -> Message:
    return notices.queue_mdn(
        inbound=message,
        reporter=reporter,
        to=result.sender,
        original_message_id=summary.message_id,
        original_recipient=reporter.address,
        disposition=disposition,
        subject=summary.subject,
        final_delivery=final_delivery,
        failure=failure,
        queue=False,
    )

