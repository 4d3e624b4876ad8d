"""Delivery Status Notifications (RFC 3464): the failure reports a sender finds in their mailbox
when a Direct message could not be delivered (Implementation Guide for Delivery Notification
section 3.4), and the ones other HISPs send us."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from hisp.reports import (
    ReportError,
    assemble,
    field_blocks,
    first,
    returned_message_id,
    strip_address_type,
)

REPORT_TYPE = "delivery-status"


@dataclass(frozen=True)
class RecipientStatus:
    final_recipient: str
    action: str  # failed, delayed, delivered, relayed, expanded (RFC 3464 2.3.3)
    status: str  # e.g. 5.7.31 (RFC 3463 class.subject.detail)
    original_recipient: str | None = None
    diagnostic: str | None = None
    remote_mta: str | None = None  # the server whose reply this reports (2.3.5)
    last_attempt: datetime | None = None  # our last attempt (2.3.7)


@dataclass(frozen=True)
class Dsn:
    reporting_mta: str
    original_message_id: str | None
    recipients: tuple[RecipientStatus, ...]


# RFC 3463 section 2: class "." subject "." detail, each of one to three digits.
_STATUS = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})")
# The status class each action implies (RFC 3464 2.3.3, RFC 3463 section 3.1).
_CLASS = {"failed": "5", "delayed": "4"}


def status_code(value: str, action: str) -> str:
    """A partner's Status as an RFC 3463 code our own DSN can quote: a code of the wrong class
    for its action, or no code at all, becomes the action's own class (we pass it on to the
    sender in a DSN whose Action says the same thing)."""
    found = _STATUS.fullmatch(value)
    wanted = _CLASS.get(action, "2")
    if found is None:
        return f"{wanted}.0.0"
    return f"{wanted}.{found.group(2)}.{found.group(3)}"


def _split_first(blocks: list[list[tuple[str, str]]]) -> list[list[tuple[str, str]]]:
    """Blocks with the per-message fields apart from the first recipient's: a DSN without the
    empty line between them (seen from broken generators) reads as one block."""
    head = blocks[0]
    names = [name.lower() for name, _ in head]
    if "reporting-mta" not in names:
        return blocks
    starts = [i for i, n in enumerate(names) if n in ("final-recipient", "original-recipient")]
    if not starts or starts[0] == 0:
        return blocks
    return [head[: starts[0]], head[starts[0] :], *blocks[1:]]


def parse(raw: bytes) -> Dsn:
    blocks = _split_first(field_blocks(raw, REPORT_TYPE))
    per_message, per_recipient = blocks[0], blocks[1:]
    if first(per_message, "Final-Recipient") is not None:
        # No per-message block at all: malformed (RFC 3464 section 2.2 requires Reporting-MTA).
        raise ReportError("a DSN starts with its per-message fields (Reporting-MTA)")
    reporting = first(per_message, "Reporting-MTA")
    if not reporting:
        raise ReportError("a DSN needs Reporting-MTA (RFC 3464 2.2.2)")
    # The original Message-ID is an extension field; implementations name it differently
    # (Original-Message-ID, X-Original-Message-ID, X-CERN-Original-Message-Id...).
    original_id = next(
        (v for k, v in per_message if k.lower().endswith("original-message-id")), None
    )
    if not original_id:
        # RFC 3464 itself names no such field: a DSN without one identifies the message by the
        # header fields it returns (its third part, section 2 and RFC 6522 section 3).
        original_id = returned_message_id(raw)
    recipients = []
    for block in per_recipient:
        final = strip_address_type(first(block, "Final-Recipient"))
        action = (first(block, "Action") or "").strip().lower()
        status = (first(block, "Status") or "").strip()
        if not final or not action or not status:
            # A block this incomplete says nothing reliable, but it does not make the others
            # wrong: a failure reported for our recipient beside it still counts.
            continue
        recipients.append(
            RecipientStatus(
                final_recipient=final,
                action=action,
                status=status.split()[0],
                original_recipient=strip_address_type(first(block, "Original-Recipient")),
                diagnostic=first(block, "Diagnostic-Code"),
            )
        )
    if not recipients:
        raise ReportError(
            "a DSN needs a recipient block with Final-Recipient, Action and Status (2.3)"
            if per_recipient
            else "a DSN needs at least one recipient block"
        )
    return Dsn(
        reporting_mta=strip_address_type(reporting) or reporting,
        original_message_id=original_id.strip() if original_id else None,
        recipients=tuple(recipients),
    )


def build(
    *,
    reporting_host: str,
    sender: str,
    to: str,
    message_id: str,
    original_message_id: str,
    original_headers: bytes | None,
    recipients: Sequence[RecipientStatus],
    explanation: str,
    subject: str = "",
    arrived: datetime | None = None,
) -> bytes:
    """A DSN about ``recipients`` of the message ``original_message_id``, which reached this
    HISP (the Reporting MTA) at ``arrived``."""
    per_message = [("Reporting-MTA", f"dns; {reporting_host}")]
    if arrived is not None:
        per_message.append(("Arrival-Date", format_datetime(arrived)))  # RFC 3464 2.2.5
    # An extension field (2.4), named as the Java and .NET reference implementations name it.
    per_message.append(("X-Original-Message-ID", original_message_id))
    blocks = [per_message]
    for rcpt in recipients:
        block = [("Final-Recipient", f"rfc822;{rcpt.final_recipient}")]
        if rcpt.original_recipient:
            block.insert(0, ("Original-Recipient", f"rfc822;{rcpt.original_recipient}"))
        block += [("Action", rcpt.action), ("Status", rcpt.status)]
        if rcpt.remote_mta:
            block.append(("Remote-MTA", f"dns; {rcpt.remote_mta}"))
        if rcpt.diagnostic:
            block.append(("Diagnostic-Code", rcpt.diagnostic))
        if rcpt.last_attempt is not None:
            block.append(("Last-Attempt-Date", format_datetime(rcpt.last_attempt)))
        blocks.append(block)
    failed = all(r.action == "failed" for r in recipients)
    title = "Delivery failed" if failed else "Delivery status"
    return assemble(
        sender=sender,
        to=to,
        subject=f"{title}: {subject}" if subject else title,
        message_id=message_id,
        report_type=REPORT_TYPE,
        human=explanation,
        machine=blocks,
        machine_type="message/delivery-status",
        original_headers=original_headers,
        extra_headers=(("Auto-Submitted", "auto-replied"),),
    )
