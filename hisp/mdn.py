"""Message Disposition Notifications (RFC 3798) as Direct uses them (Implementation Guide for
Delivery Notification in Direct 1.0): ``processed`` when a HISP has accepted a message after
security and trust processing, ``dispatched`` (with the ``X-DIRECT-FINAL-DESTINATION-DELIVERY``
extension field) once it is in the recipient's mailbox, ``failed`` when it cannot be delivered."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.errors import AgentError
from hisp import mailtext
from hisp.reports import (
    ReportError,
    assemble,
    field_blocks,
    first,
    returned_message_id,
    strip_address_type,
)

REPORT_TYPE = "disposition-notification"
# Implementation Guide section 3.3: the extension field that marks a dispatched MDN as the
# final-destination-delivery confirmation the sender asked for.
FINAL_DELIVERY_FIELD = "X-DIRECT-FINAL-DESTINATION-DELIVERY"
AUTOMATIC = "automatic-action/MDN-sent-automatically"
TYPES = frozenset({"processed", "dispatched", "failed", "displayed", "deleted", "denied"})


@dataclass(frozen=True)
class Mdn:
    disposition: str  # the disposition type: processed, dispatched, failed, ...
    modifiers: tuple[str, ...]  # e.g. ("error",)
    original_message_id: str
    final_recipient: str
    original_recipient: str | None
    reporting_ua: str
    final_delivery: bool  # carries X-DIRECT-FINAL-DESTINATION-DELIVERY
    failure: str | None = None

    @property
    def is_failure(self) -> bool:
        # "failed" is the Implementation Guide's negative delivery notification (section 3.4);
        # the "error" modifier says processing failed (RFC 3798 3.2.6.3). "deleted" and
        # "denied" are not failures: the message reached the recipient, who deleted it or does
        # not want its disposition reported (3.2.6.2).
        return self.disposition == "failed" or "error" in self.modifiers


_COMMENT = re.compile(r"\([^()]*\)")
_MSG_ID = re.compile(r"<[^<>]+>")
_PLAIN_MSG_ID = re.compile(r"<[^<>\s]+>")


def _original_id(raw: bytes) -> str | None:
    """Which message an MDN without Original-Message-ID is about: the original message or its
    header fields returned in its third part (RFC 3798 section 3), else the MDN's own
    In-Reply-To (RFC 5322 3.6.4), which implementations that leave the field out still set."""
    returned = returned_message_id(raw)
    if returned:
        return returned
    try:
        values = mailtext.header_values(raw, "in-reply-to")
    except AgentError:  # a header block the MIME parser refuses: no In-Reply-To to read
        return None
    for value in values:
        found = _MSG_ID.search(value)
        if found:
            return mailtext.printable(found.group(0))
    return None


def parse(raw: bytes) -> Mdn:
    """Parse an MDN; raises :class:`ReportError` when a required field is missing."""
    block = [field for group in field_blocks(raw, REPORT_TYPE) for field in group]
    disposition = first(block, "Disposition")
    original_id = first(block, "Original-Message-ID") or _original_id(raw)
    final = strip_address_type(first(block, "Final-Recipient"))
    if not disposition or not original_id or not final:
        raise ReportError(
            "an MDN needs Disposition, Final-Recipient and Original-Message-ID (RFC 3798 3.1)"
        )
    # disposition-field = disposition-mode ";" disposition-type ["/" modifier *("," modifier)];
    # some implementations add an RFC 5322 comment, "processed (by the HISP)", which says
    # nothing about the disposition.
    _mode, sep, rest = _COMMENT.sub(" ", disposition).partition(";")
    if not sep:
        raise ReportError("Disposition without a disposition type")
    kind, _, modifiers = rest.strip().partition("/")
    kind = kind.strip().lower()
    if kind not in TYPES:
        raise ReportError(f"unknown disposition type {kind[:40]!r}")
    return Mdn(
        disposition=kind,
        modifiers=tuple(m.strip().lower() for m in modifiers.split(",") if m.strip()),
        original_message_id=original_id.strip(),
        final_recipient=final,
        original_recipient=strip_address_type(first(block, "Original-Recipient")),
        reporting_ua=first(block, "Reporting-UA") or "",
        final_delivery=first(block, FINAL_DELIVERY_FIELD) is not None,
        failure=first(block, "Failure") or first(block, "Error"),
    )


def build(
    *,
    reporting_host: str,
    sender: str,
    to: str,
    message_id: str,
    original_message_id: str,
    final_recipient: str,
    disposition: str,
    original_recipient: str | None = None,
    subject: str = "",
    final_delivery: bool = False,
    failure: str | None = None,
) -> bytes:
    """An MDN from ``sender`` (the recipient that reports) to ``to`` (the original sender).

    It carries no Disposition-Notification-To: an MDN is never answered with an MDN
    (RFC 3798 section 2.1). ``original_recipient``: the recipient as the sender named it
    (RFC 3798 3.2.3), when that is reliably known; without it the field is left out."""
    if disposition not in ("processed", "dispatched", "failed"):
        raise ValueError(f"unsupported disposition {disposition!r}")
    if final_delivery and disposition != "dispatched":
        raise ValueError("only a dispatched MDN carries X-DIRECT-FINAL-DESTINATION-DELIVERY")
    fields = [("Reporting-UA", f"{reporting_host}; HISP Direct security agent")]
    if original_recipient:
        fields.append(("Original-Recipient", f"rfc822;{original_recipient}"))
    fields.append(("Final-Recipient", f"rfc822;{final_recipient}"))
    # RFC 3798 3.2.5: present whenever the original had a Message-ID; without one there is
    # nothing to quote, and an empty field would not be a msg-id.
    if original_message_id.strip():
        fields.append(("Original-Message-ID", original_message_id))
    fields.append(("Disposition", f"{AUTOMATIC};{disposition}"))
    if failure:
        fields.append(("Failure", failure))
    if final_delivery:
        fields.append((FINAL_DELIVERY_FIELD, ""))
    human = {
        "processed": f"The message was processed for {final_recipient}.",
        "dispatched": f"The message was delivered to the mailbox of {final_recipient}.",
        "failed": f"The message could not be delivered to {final_recipient}.",
    }[disposition]
    title = disposition.capitalize()
    extra = [("Auto-Submitted", "auto-replied")]
    if _PLAIN_MSG_ID.fullmatch(original_message_id):
        # RFC 5322 3.6.4: a reply names its parent; partners that match or thread reports by
        # it (and mail clients showing them) find the original this way too.
        extra.append(("In-Reply-To", original_message_id))
    return assemble(
        sender=sender,
        to=to,
        subject=f"{title}: {subject}" if subject else title,
        message_id=message_id,
        report_type=REPORT_TYPE,
        human=human,
        machine=[fields],
        machine_type="message/disposition-notification",
        extra_headers=tuple(extra),
    )
