"""Reports this HISP writes: MDNs it sends for its recipients (queued as outbound messages, so
they are signed and encrypted like any other mail) and DSNs / notices it puts straight into a
hosted sender's mailbox.

Every function here is called inside the transaction that made the state change the report is
about, so a report exists exactly when its state change committed (never twice, never lost).
"""

from __future__ import annotations

import logging
from datetime import datetime
from email.utils import format_datetime

from django.conf import settings
from django.utils import timezone

from hisp import dsn, durations, mailtext, mdn
from hisp.models import Address, Delivery, DeliveryEvent, MailboxEntry, Message
from hisp.services.compose import new_message_id
from hisp.services.mail import enqueue, find_address

log = logging.getLogger(__name__)

# RFC 3463 status codes for the agent's reasons. The Direct-specific 5.7.x details:
# 5.7.11 untrusted, 5.7.31 no usable certificate.
STATUS_FOR_CODE = {
    "no-recipient-certificate": "5.7.31",
    "untrusted-recipient": "5.7.11",
    "no-sender-key": "5.7.0",
}
EXPIRED = "5.4.7"  # RFC 3463: delivery time expired


def status_for(code: str) -> str:
    return STATUS_FOR_CODE.get(code, "5.7.0")


def delayed_status_for(code: str) -> str:
    """The persistent transient form of ``status_for(code)`` (RFC 3463 section 3.1: class 4,
    same subject and detail), for a delivery held for that reason; the failure DSN that may
    end the hold carries the 5.x.x form."""
    return "4" + status_for(code)[1:]


# Why a delivery is held (outbound holds only for these two agent codes), as the sender reads it.
_HELD_BECAUSE = {
    "no-recipient-certificate": "no usable certificate was found for this recipient",
    "untrusted-recipient": (
        "the certificate found for this recipient is not trusted (it does not chain to a trust "
        "anchor of your domain)"
    ),
}


def held_because(code: str) -> str:
    fallback = f"the message could not be protected for this recipient ({code})"
    return _HELD_BECAUSE.get(code, fallback)


def build_mdn(
    *,
    reporter: Address,
    to: str,
    original_message_id: str,
    disposition: str,
    subject: str,
    original_recipient: str | None = None,
    final_delivery: bool = False,
    failure: str | None = None,
) -> tuple[str, bytes]:
    """An MDN from the hosted ``reporter`` to the original sender ``to``: (Message-ID, bytes).
    ``original_recipient``: the recipient as the sender named it, when reliably known (RFC 3798
    3.2.3: otherwise the MDN carries none)."""
    message_id = new_message_id()
    raw = mdn.build(
        reporting_host=settings.HISP_HOSTNAME,
        sender=reporter.address,
        to=to,
        message_id=message_id,
        original_message_id=original_message_id,
        original_recipient=original_recipient,
        final_recipient=reporter.address,
        disposition=disposition,
        subject=subject,
        final_delivery=final_delivery,
        failure=failure,
    )
    return message_id, raw


def mdn_message(
    *,
    inbound: Message,
    reporter: Address,
    to: str,
    message_id: str,
    raw: bytes,
    disposition: str,
    subject: str,
    wire: bytes | None = None,
) -> Message:
    """The (unsaved) outbound message row for an MDN built by :func:`build_mdn`: queued for
    the outbound pipeline, or done already when the caller protected it (``wire``)."""
    return Message(
        direction=Message.Direction.OUTBOUND,
        kind=Message.Kind.MDN,
        state=Message.State.QUEUED if wire is None else Message.State.SENT,
        raw=raw,
        message_id=message_id,
        # Whose key signs it; on the wire MAIL FROM is <> (outbound.reverse_path, RFC 3798 3).
        envelope_from=reporter.address,
        envelope_to=[to],
        header_from=reporter.address,
        header_to=[to],
        subject=f"{disposition.capitalize()}: {subject}"[:998],
        original=inbound,
        peer="hisp",
    )


def mdn_delivery(
    report: Message, *, to: str, wire: bytes | None = None, claimed_at: datetime | None = None
) -> Delivery:
    """The (unsaved) one delivery of a saved MDN message; with ``wire`` it holds the protected
    bytes, claimed at ``claimed_at`` by the caller, who sends it right after the commit."""
    return Delivery(
        message=report,
        recipient=to,
        state=Delivery.State.QUEUED,
        wire=wire,
        claimed_at=claimed_at if wire is not None else None,
    )


def _sender_mailbox(delivery: Delivery) -> Address | None:
    message = delivery.message
    if message.kind != Message.Kind.REGULAR or message.direction != Message.Direction.OUTBOUND:
        return None  # never a report about a report (RFC 3798 2.1, RFC 3464 section 1)
    return find_address(message.envelope_from)


def _file(*, mailbox: Address, kind: str, raw: bytes, original: Message) -> Message:
    summary = mailtext.summarise(raw)
    notice = Message.objects.create(
        direction=Message.Direction.INBOUND,
        kind=kind,
        state=Message.State.DELIVERED,
        raw=raw,
        content=raw,
        message_id=summary.message_id,
        envelope_from="",
        envelope_to=[mailbox.address],
        header_from=summary.sender,
        header_to=[mailbox.address],
        subject=summary.subject[:998],
        original=original,
        peer="hisp",
    )
    MailboxEntry.objects.create(
        address=mailbox,
        message=notice,
        sender=summary.sender,
        recipients=[mailbox.address],
        subject=summary.subject[:998],
        snippet=summary.snippet,
        body_text=summary.body_text,
        received_at=timezone.now(),
    )
    return notice


def file_dsn(
    delivery: Delivery,
    *,
    action: str,
    status: str,
    diagnostic: str,
    explanation: str,
    remote_mta: str | None = None,
    last_attempt: datetime | None = None,
) -> Message | None:
    """Put one DSN about ``delivery`` into its sender's mailbox (RFC 3464)."""
    mailbox = _sender_mailbox(delivery)
    if mailbox is None:
        return None
    original = delivery.message
    raw = dsn.build(
        reporting_host=settings.HISP_HOSTNAME,
        # RFC 3464 section 2.1: from someone responsible for the mail system, so that a reply
        # reaches them: the sender's own domain's postmaster mailbox, which every hosted domain
        # has (HISP_HOSTNAME need not be a hosted domain, and by default is "localhost").
        sender=f"postmaster@{mailbox.address.rpartition('@')[2]}",
        to=mailbox.address,
        message_id=new_message_id(),
        original_message_id=original.message_id,
        # With the submission port's Received stamp, as an MTA returns the header it
        # received (the stamp is the message's first field, hisp/smtp/trace.py).
        original_headers=original.trace.encode("ascii") + mailtext.head_of(bytes(original.raw)),
        arrived=original.created_at,
        recipients=[
            dsn.RecipientStatus(
                final_recipient=delivery.recipient,
                action=action,
                status=status,
                diagnostic=diagnostic,
                remote_mta=remote_mta,
                last_attempt=last_attempt,
            )
        ],
        explanation=explanation,
        subject=original.subject,
    )
    return _file(mailbox=mailbox, kind=Message.Kind.DSN, raw=raw, original=original)


def file_failure(
    delivery: Delivery,
    *,
    status: str,
    diagnostic: str,
    why: str,
    remote_mta: str | None = None,
    last_attempt: datetime | None = None,
) -> Message | None:
    return file_dsn(
        delivery,
        action="failed",
        status=status,
        diagnostic=diagnostic,
        explanation=f"Your message could not be delivered to {delivery.recipient}: {why}",
        remote_mta=remote_mta,
        last_attempt=last_attempt,
    )


def file_delivered_notice(delivery: Delivery) -> Message | None:
    """The one final positive notice of timely and reliable delivery (Implementation Guide for
    Delivery Notification section 3.3)."""
    return file_dsn(
        delivery,
        action="delivered",
        status="2.0.0",
        diagnostic="x-direct; dispatched",
        explanation=f"Your message was delivered to the mailbox of {delivery.recipient}.",
    )


def file_pending_notice(delivery: Delivery, *, code: str, until: str) -> Message | None:
    """The "delayed" DSN for a delivery held because of the agent's ``code``: its status and
    words say which reason (a missing certificate, or one not trusted), as the failure DSN
    would if the hold ran out."""
    return file_dsn(
        delivery,
        action="delayed",
        status=delayed_status_for(code),
        diagnostic=f"x-direct; pending-certificate ({code})",
        explanation=(
            f"Delivery to {delivery.recipient} is pending: {held_because(code)}. "
            f"Delivery is retried until {until}, then fails."
        ),
    )


COURTESY_TEXT = (
    "Your message to {recipient} was not accepted: Direct messages must be signed and "
    "encrypted (S/MIME). Please send it through your Direct provider (HISP). This notice is "
    "sent at most once per {interval}."
)


def queue_courtesy_notice(*, inbound: Message, reporter: Address, to: str) -> Message | None:
    """Tell the sender of unsecured mail, at most once per ``HISP_COURTESY_INTERVAL`` (the
    threat model's "notification without loops"). It travels signed and encrypted like all our
    mail, so a sender without a Direct certificate gets nothing: a plaintext notice would be a
    back-scatter channel."""
    from django.core.cache import cache

    interval = settings.HISP_COURTESY_INTERVAL
    if not cache.add(f"hisp:courtesy:{to.lower()}", 1, timeout=int(interval.total_seconds())):
        return None
    message_id = new_message_id()
    text = COURTESY_TEXT.format(recipient=reporter.address, interval=durations.describe(interval))
    # RFC 5322 3.6: a message must carry a Date. This one does not pass through
    # compose.submit, which adds one where a client left it out.
    raw = (
        f"From: {reporter.address}\r\nTo: {to}\r\nSubject: Message not accepted\r\n"
        f"Date: {format_datetime(timezone.now())}\r\n"
        f"Message-ID: {message_id}\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{text}\r\n"
    ).encode("ascii")
    notice = Message.objects.create(
        direction=Message.Direction.OUTBOUND,
        kind=Message.Kind.NOTICE,
        state=Message.State.QUEUED,
        raw=raw,
        message_id=message_id,
        envelope_from=reporter.address,  # the signer; sent with MAIL FROM:<> (RFC 3834 3.3)
        envelope_to=[to],
        header_from=reporter.address,
        header_to=[to],
        subject="Message not accepted",
        original=inbound,
        peer="hisp",
    )
    delivery = Delivery.objects.create(message=notice, recipient=to, state=Delivery.State.QUEUED)
    DeliveryEvent.objects.create(delivery=delivery, state=Delivery.State.QUEUED, detail="courtesy")
    enqueue("process_outgoing", notice.pk)
    return notice
