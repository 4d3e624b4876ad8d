"""New outgoing messages: building one from a form or the CLI, and submitting raw RFC 5322 mail
(webmail, the submission port, ``manage.py send``) into the outbound pipeline."""

from __future__ import annotations

import logging
import math
import re
import secrets
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP, compat32
from email.utils import format_datetime, getaddresses

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from agent.errors import AgentError
from agent.mime import MAX_ADDRESS_FIELD_CHARS
from hisp import mailtext
from hisp.models import Address, Delivery, DeliveryEvent, MailboxEntry, Message
from hisp.services import audit, identity
from hisp.services.mail import enqueue, find_address

log = logging.getLogger(__name__)

# (filename, content type, bytes)
AttachmentData = tuple[str, str, bytes]

FINAL_DELIVERY_OPTION = "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true"
# The stored header columns (Message.message_id, header_from, subject) hold RFC 5322's line
# length; a folded field may be longer.
MAX_HEADER_CHARS = 998


# As many as our SMTP listeners take in one transaction (RFC 5321 4.5.3.1.8 asks for 100).
MAX_RECIPIENTS = 100

# The fields whose addresses submit reads (From and Sender against the sender, the others for
# the recipients).
_ADDRESS_FIELDS = ("From", "Sender", "To", "Cc", "Bcc")


class SubmissionError(ValueError):
    """The message cannot be sent as submitted; the text says why (safe to show the user)."""


class SendingLimited(SubmissionError):
    """The sending address was given HISP_SEND_RECIPIENTS_PER_HOUR recipients in the last hour
    (temporary: the submission port answers ``451 4.7.1``, the mail API 429)."""

    def __init__(self, text: str, *, retry_after: int) -> None:
        super().__init__(text)
        self.retry_after = retry_after  # seconds until this message would be taken


class MessageTooLarge(SubmissionError):
    """Once signed and encrypted the message would exceed HISP_MAX_MESSAGE_BYTES (the submission
    port answers ``552 5.3.4``, RFC 3463: too big for the system)."""


# How protection grows a message (agent.protect): the plaintext goes whole into a
# multipart/signed entity next to a base64 SignedData (the signer's certificate and chain), that
# entity is encrypted (DER EnvelopedData, one RecipientInfo per recipient certificate) and the
# result is base64 in 76-character lines (4/3 * 78/76, about 1.37 times); the From, To, Cc,
# Subject, Date, Message-ID and notification header fields are repeated in clear outside.
# The constants are upper bounds checked against the real agent
# (tests/hisp/mail/test_protected_size.py, 1 KB to 20 MB): the estimate is about 24 KB above the
# real size with our own CA's certificates, and still 15 KB above with 4096-bit keys, long
# issuer names, two intermediates and two certificates per recipient.
#
# The multipart/signed wrapper and the base64 SignedData (the signer's certificate and chain):
# ~3 KB with our CA; 16 KB leaves room for 4096-bit keys and a chain of several certificates.
SIGNATURE_BYTES = 16 * 1024
# One KeyTransRecipientInfo: issuer name, serial and the wrapped key (256 bytes for RSA-2048,
# 512 for RSA-4096); ~0.4 KB is usual, 1 KB allows a long issuer name and a 4096-bit key.
RECIPIENT_INFO_BYTES = 1024
# A recipient may publish more than one certificate (the old and the new one during a
# rollover), and the agent encrypts to every usable one.
CERTIFICATES_PER_RECIPIENT = 2
# DER framing, algorithm identifiers, IV and CBC padding (or the GCM tag) of the EnvelopedData,
# the envelope's own MIME header fields and a neutral Subject, when one replaces the real one.
ENVELOPE_BYTES = 2 * 1024
# The header section of a message built here (webmail, ``manage.py send``), apart from its
# recipients and subject: From, Date, Message-ID, MIME and notification fields.
HEADER_BYTES = 2 * 1024
MB = 1024 * 1024


SEND_WINDOW = timedelta(hours=1)


def recent_recipients(address: str, *, now: datetime) -> list[tuple[datetime, int]]:
    """When and to how many recipients ``address`` submitted mail within SEND_WINDOW, oldest
    first (the partial index message_sent_by_recently)."""
    rows = Message.objects.filter(
        direction=Message.Direction.OUTBOUND,
        kind=Message.Kind.REGULAR,
        envelope_from=address,
        created_at__gt=now - SEND_WINDOW,
    ).order_by("created_at", "id").values_list("created_at", "envelope_to")
    return [(created, len(recipients)) for created, recipients in rows]


def check_sending_limit(address: str, recipients: int, *, now: datetime) -> None:
    """Raise SendingLimited when ``recipients`` more would take ``address`` past
    HISP_SEND_RECIPIENTS_PER_HOUR in the hour up to ``now``."""
    limit = int(settings.HISP_SEND_RECIPIENTS_PER_HOUR)
    if not limit:
        return
    sent = recent_recipients(address, now=now)
    total = sum(count for _at, count in sent)
    if total + recipients <= limit:
        return
    # The moment enough of the hour's recipients have aged out for this message to fit: never,
    # while the message alone is over the limit.
    excess, free_at = total + recipients - limit, None
    for created, count in sent:
        excess -= count
        if excess <= 0:
            free_at = created + SEND_WINDOW
            break
    if free_at is None:
        raise SubmissionError(
            f"{address} may send to at most {limit} recipients in an hour, and this message has "
            f"{recipients}"
        )
    wait = max(1, math.ceil((free_at - now).total_seconds()))
    raise SendingLimited(
        f"{address} has sent to {total} recipients in the last hour, and this HISP allows "
        f"{limit}; this message can be sent in {_minutes(wait)}",
        retry_after=wait,
    )


def _minutes(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def _base64_lines(size: int) -> int:
    """Bytes of ``size`` bytes in base64 with CRLF after every 76 characters (RFC 2045 6.8)."""
    text = -(-size // 3) * 4
    return text + 2 * -(-text // 76)


def protected_size(size: int, *, certificates: int = 1, headers: int = HEADER_BYTES) -> int:
    """An upper bound on the bytes on the wire once a plaintext message of ``size`` bytes
    (header section included) is signed and encrypted to ``certificates`` recipient
    certificates; ``headers`` is the length of its header section, part of which is repeated in
    clear (see above)."""
    envelope = size + SIGNATURE_BYTES + max(certificates, 1) * RECIPIENT_INFO_BYTES + ENVELOPE_BYTES
    return headers + ENVELOPE_BYTES + _base64_lines(envelope)


def largest_plaintext(*, certificates: int = 1, headers: int = HEADER_BYTES) -> int:
    """The largest plaintext message that fits HISP_MAX_MESSAGE_BYTES once protected (0 when
    none does): partner HISPs take protected mail up to that size, as our backbone does."""
    limit = int(settings.HISP_MAX_MESSAGE_BYTES)
    low, high = 0, limit  # protection only ever adds, so the answer is at most the limit
    if protected_size(0, certificates=certificates, headers=headers) > limit:
        return 0
    while low < high:  # the estimate grows with the size: the last size that fits
        middle = (low + high + 1) // 2
        if protected_size(middle, certificates=certificates, headers=headers) <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def size_text(size: int) -> str:
    """``1.5 MB`` or ``120 KB``, for people (MB as HISP_MAX_MESSAGE_BYTES is set: 2**20)."""
    if size >= MB:
        return f"{size / MB:.1f}".removesuffix(".0") + " MB"
    return f"{-(-size // 1024)} KB"


def certificates_for(recipients: Sequence[str]) -> int:
    """RecipientInfos in the largest envelope: outbound protects once per destination domain,
    for every certificate of each of that domain's recipients."""
    per_domain = Counter(r.rpartition("@")[2].lower() for r in recipients)
    return max(per_domain.values(), default=1) * CERTIFICATES_PER_RECIPIENT


def check_protected_size(*, size: int, recipients: Sequence[str], headers: int) -> None:
    """Raise MessageTooLarge when the message would exceed HISP_MAX_MESSAGE_BYTES once signed
    and encrypted: a partner HISP with the same limit would answer 552, and the sender would
    learn of it only from a failure notice much later."""
    limit = int(settings.HISP_MAX_MESSAGE_BYTES)
    certificates = certificates_for(recipients)
    wire = protected_size(size, certificates=certificates, headers=headers)
    if wire > limit:
        allowance = largest_plaintext(certificates=certificates, headers=headers)
        raise MessageTooLarge(
            f"the message is too large: signed and encrypted it would be about "
            f"{size_text(wire)}, {size_text(wire - limit)} over the {size_text(limit)} limit "
            f"for secure messages; messages up to about {size_text(allowance)} fit. Remove "
            "attachments or send them in several messages."
        )


def new_message_id() -> str:
    # 128 random bits: unique without coordination between processes (RFC 5322 3.6.4).
    return f"<{secrets.token_hex(16)}@{settings.HISP_HOSTNAME}>"


def build_message(
    *,
    sender: str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    subject: str,
    body_text: str,
    attachments: Sequence[AttachmentData] = (),
    delivery_notification: bool = True,
    sender_name: str = "",
) -> bytes:
    """An RFC 5322 message with a unique Message-ID on ``HISP_HOSTNAME``; with
    ``delivery_notification`` it asks for timely and reliable delivery (Implementation Guide for
    Delivery Notification section 3.2)."""
    if not to:
        raise SubmissionError("at least one recipient is required")
    # One line per header field (RFC 5322 section 2.2): a CR or LF would start a new field,
    # and so would VT, FF, NEL or U+2028 for the email package (str.splitlines); the other
    # control characters have no place in a field either.
    if any(_NOT_IN_A_FIELD.search(value) for value in (subject, sender_name)):
        raise SubmissionError(
            "the subject and sender name must be single lines of text, without control characters"
        )
    for rcpt in (*to, *cc):
        if _NOT_IN_A_FIELD.search(rcpt):
            raise SubmissionError("not a Direct address (it holds a control character)")
    message = EmailMessage(policy=SMTP)
    local, _, domain = sender.rpartition("@")
    message["From"] = HeaderAddress(display_name=sender_name, username=local, domain=domain)
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Date"] = format_datetime(timezone.now())
    message["Message-ID"] = new_message_id()
    if delivery_notification:
        message["Disposition-Notification-Options"] = FINAL_DELIVERY_OPTION
    message.set_content(body_text)
    for filename, content_type, data in attachments:
        maintype, subtype = _attachment_type(content_type)
        message.add_attachment(
            data, maintype=maintype, subtype=subtype, filename=_attachment_name(filename)
        )
    return message.as_bytes()


# C0 controls but tab, DEL, the C1 controls and the Unicode line and paragraph separators.
_NOT_IN_A_FIELD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# RFC 2045 section 5.1: type "/" subtype, each a token (parameters are not taken from outside).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_CONTENT_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})\Z")


def _attachment_type(content_type: str) -> tuple[str, str]:
    """The (type, subtype) an attachment is sent as. What the browser or a file's extension
    says is taken only when it is a well-formed leaf type: a multipart or message type would
    promise a structure (and, RFC 2046 section 5.2.1, an encoding) the bytes attached do not
    have, and anything else could not be written as a field."""
    found = _CONTENT_TYPE.match(content_type.strip())
    if found is None or found[1].lower() in ("multipart", "message"):
        return "application", "octet-stream"
    return found[1].lower(), found[2].lower()


def _attachment_name(filename: str) -> str:
    """The file name without control characters (it is a header parameter; a forwarded
    attachment's name comes from outside), and never empty."""
    return _NOT_IN_A_FIELD.sub("", filename).strip() or "attachment"


def _hosted_sender(address: Address | str) -> Address:
    if isinstance(address, Address):
        row: Address | None = address
    else:
        row = find_address(address)
    if row is None:
        raise SubmissionError(f"{address} is not an address hosted here")
    if row.status != Address.Status.ACTIVE:
        raise SubmissionError(f"{row.address} is not active")
    return row


def submit(
    *,
    address: Address | str,
    raw: bytes,
    actor: AbstractBaseUser | str | None,
    peer: str,
    recipients: Sequence[str] | None = None,
    client: str | None = None,
    trace: str = "",
) -> Message:
    """Store an outgoing message as the hosted ``address`` and queue its protection.

    ``recipients`` is the SMTP envelope on the submission port; otherwise To, Cc and Bcc.
    ``client`` is the submitting network address (browser or mail client), for the audit log.
    ``trace`` is the submission port's Received stamp, signed and encrypted as the message's
    first field (``Message.trace``).
    The From header must be the sending address: the recipient's agent binds it to our
    signature (Applicability Statement 4.0), so anything else would be rejected there anyway.
    """
    sender = _hosted_sender(address)
    try:
        head = mailtext.parse(mailtext.head_of(raw))
        # Every address of every From field, read from the fields as written (compat32: no
        # repair): parseaddr would see only the first of "alice@ours, eve@elsewhere", and the
        # modern parser turns "alice@ours <eve@elsewhere>" into alice@ours, while a reader's
        # client may show eve. Either way a second, unauthenticated author would get through.
        written = BytesParser(policy=compat32).parsebytes(mailtext.head_of(raw), headersonly=True)
        # The address parsers slow down faster than a field grows (20,000 addresses: 10 to
        # 40 s): fields longer than any hundred recipients need are refused unparsed, by the
        # bound the agent puts on received mail.
        length = sum(len(str(v)) for name in _ADDRESS_FIELDS for v in written.get_all(name, []))
        if length > MAX_ADDRESS_FIELD_CHARS:
            too_long = (
                f"the address fields are too long ({size_text(length)}; at most "
                f"{size_text(MAX_ADDRESS_FIELD_CHARS)} together): at most {MAX_RECIPIENTS} "
                "recipients per message, send it in several messages"
            )
            raise SubmissionError(too_long)
        header_from = [
            a for _n, a in getaddresses([str(v) for v in written.get_all("From", [])]) if a
        ]
        # Sender names who sent it on the author's behalf, and readers' clients show it
        # ("on behalf of"): only the authenticated sending address may be named there too.
        header_sender = [
            a for _n, a in getaddresses([str(v) for v in written.get_all("Sender", [])]) if a
        ]
    except SubmissionError:
        raise
    except (AgentError, ValueError, IndexError, TypeError) as exc:
        raise SubmissionError(f"the message headers do not parse: {exc}") from None
    if len(header_from) != 1 or header_from[0].lower() != sender.address.lower():
        raise SubmissionError(f"the From header must be {sender.address}")
    if written.get_all("Sender") and (
        len(header_sender) != 1 or header_sender[0].lower() != sender.address.lower()
    ):
        raise SubmissionError(f"the Sender header, when present, must be {sender.address}")
    if recipients is None:
        recipients = [
            *mailtext.addresses(head, "To"),
            *mailtext.addresses(head, "Cc"),
            *mailtext.addresses(head, "Bcc"),
        ]
    # Every address checked before anything is looked up by it (a NUL reached PostgreSQL).
    given = [r for r in (r.strip() for r in recipients) if r]
    for rcpt in given:
        refusal = recipient_refusal(rcpt)
        if refusal:
            raise SubmissionError(refusal)
    # One delivery per mailbox: the same address again, in another case or in To and Bcc,
    # would send the message twice and confuse its tracking (mailbox_key).
    rcpts = distinct_mailboxes(given)
    if not rcpts:
        raise SubmissionError("the message has no recipients")
    # Each recipient costs a certificate discovery and a delivery: thousands in the headers
    # (webmail and the CLI take them from there) would hold a worker for many minutes.
    if len(rcpts) > MAX_RECIPIENTS:
        raise SubmissionError(_too_many(len(rcpts)))
    try:
        # RFC 5322 sections 3.6.3 and 3.6.6: what blind recipients (of the message, or of a
        # client's resending) are named in is for no recipient's eyes.
        raw = mailtext.without_fields(raw, frozenset({"bcc", "resent-bcc"}))
        added: list[tuple[str, str]] = []
        if len(head.get_all("Message-ID") or ()) > 1:
            # RFC 5322 3.6 allows one: a partner's MDN could quote either, and tracking would
            # wait for one about the other until the delivery failed.
            raise SubmissionError("the message has more than one Message-ID field")
        message_id = " ".join(str(head.get("Message-ID") or "").split())
        if mailtext.has_control_character(message_id):
            # RFC 5322 3.6.4 allows none; it is looked up and stored as written, and the
            # database refuses a NUL (an error the client would retry for ever).
            raise SubmissionError("the Message-ID must not contain control characters")
        if len(message_id) > MAX_HEADER_CHARS:
            # Tracking finds the message by the exact id that MDNs and DSNs quote: a stored
            # copy cut short would never match them.
            raise SubmissionError(f"the Message-ID is longer than {MAX_HEADER_CHARS} characters")
        if not message_id:
            message_id = new_message_id()
            added.append(("Message-ID", message_id))
        if head.get("Date") is None:
            added.append(("Date", format_datetime(timezone.now())))
        raw = mailtext.prepend_fields(raw, added)  # RFC 6409 section 8: the MSA may add them
        try:
            timely = mailtext.wants_final_delivery(raw)
        except mailtext.OptionsMalformed:
            timely = False
    except AgentError as exc:
        raise SubmissionError(f"the message headers do not parse: {exc.detail}") from None
    # The agent signs the message with CRLF line ends (RFC 8551 3.1.1): each bare LF (possible
    # only from webmail or the CLI; the port refuses them) gains a CR.
    check_protected_size(
        size=len(trace) + _crlf_length(raw),
        recipients=rcpts,
        headers=_crlf_length(mailtext.head_of(raw)),
    )
    summary = mailtext.summarise(raw)
    now = timezone.now()

    def retry_of() -> Message | None:
        """The stored message this one repeats (a client resending after a lost reply)."""
        return _repeated(
            message_id,
            sender=sender.address,
            rcpts=rcpts,
            raw=raw,
            date_added=bool(added and added[-1][0] == "Date"),
        )

    try:
        with transaction.atomic():
            earlier = retry_of()
            if earlier is not None:
                return earlier  # a client's retry of a message already taken: not counted again
            if isinstance(actor, AbstractBaseUser):  # a person or their program, not the operator
                check_sending_limit(sender.address, len(rcpts), now=now)
            message = Message.objects.create(
                direction=Message.Direction.OUTBOUND,
                kind=Message.Kind.REGULAR,
                state=Message.State.QUEUED,
                raw=raw,
                message_id=message_id,
                envelope_from=sender.address,
                envelope_to=rcpts,
                header_from=summary.sender[:MAX_HEADER_CHARS],
                header_to=list(summary.to + summary.cc),
                subject=summary.subject[:MAX_HEADER_CHARS],
                peer=peer[:255],
                trace=trace,
            )
            for rcpt in rcpts:
                delivery = Delivery.objects.create(
                    message=message, recipient=rcpt, state=Delivery.State.QUEUED, timely=timely
                )
                DeliveryEvent.objects.create(delivery=delivery, state=Delivery.State.QUEUED)
            MailboxEntry.objects.create(
                address=sender,
                message=message,
                folder=MailboxEntry.SystemFolder.SENT,
                read=True,
                sender=summary.sender[:MAX_HEADER_CHARS],
                recipients=rcpts,
                subject=summary.subject[:MAX_HEADER_CHARS],
                snippet=summary.snippet,
                body_text=summary.body_text,
                has_attachments=bool(summary.attachments),
                received_at=now,
            )
            audit.record(
                action="message.submitted",
                obj=message,
                actor=actor,
                client=client,
                sender=sender.address,
                recipients=len(rcpts),
                via=peer[:40],
            )
            enqueue("process_outgoing", message.pk)
    except SendingLimited as exc:
        # Written after the rollback, so it stays: an address at its limit may be a stolen
        # password at work, and staff find it in the audit log (console: Audit).
        audit.record(
            action="message.send-limited",
            obj=sender,
            actor=actor,
            client=client,
            sender=sender.address,
            recipients=len(rcpts),
            limit=int(settings.HISP_SEND_RECIPIENTS_PER_HOUR),
            retry_after=exc.retry_after,
            via=peer[:40],
        )
        raise
    except IntegrityError as exc:
        # The same Message-ID committed meanwhile: the client's own retry running alongside?
        earlier = retry_of()
        if earlier is not None:
            return earlier
        raise SubmissionError(f"the message could not be stored: {exc}") from None
    return message


def mailbox_key(address: str) -> str:
    """What every spelling of one recipient has in common: the whole address in lower case.

    The domain is case-insensitive (RFC 5321 section 2.4). The local part, says the same
    section, belongs to the destination, which may treat it as case-sensitive, though
    "exploiting the case sensitivity of mailbox local-parts impedes interoperability and is
    discouraged". This HISP already treats it as case-insensitive where it matters: delivery
    tracking matches a partner's MDNs and DSNs to our deliveries ignoring case
    (tracking._deliveries, _pick) and hosted addresses are found ignoring case. Two deliveries
    to ``Doc@`` and ``doc@`` would share one processed MDN: one confirmed, the other failed by
    the MDN timeout with a false failure notice. So they are one recipient, sent to as first
    spelled (the case is kept on the wire, as section 2.4 asks)."""
    return address.lower()


def distinct_mailboxes(addresses: Sequence[str]) -> list[str]:
    """``addresses`` with every later spelling of a mailbox already listed left out (see
    mailbox_key): one delivery per mailbox, in the order named, each as first spelled."""
    by_mailbox: dict[str, str] = {}
    for address in addresses:
        by_mailbox.setdefault(mailbox_key(address), address)
    return list(by_mailbox.values())


def _too_many(count: int) -> str:
    return (
        f"at most {MAX_RECIPIENTS} recipients per message ({count} given): "
        "send it in several messages"
    )


# RFC 5321 section 4.1.2: a Mailbox is a Local-part (a Dot-string or a Quoted-string) "@" a
# Domain of letter-digit-hyphen labels (RFC 1035 2.3.1). Address literals are no Direct
# addresses (see recipient_refusal).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(
    rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*")\Z'
)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+\Z")
# RFC 5321 section 4.5.3.1: 64 octets of local part; a DNS name has at most 253 characters.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 253


def recipient_refusal(rcpt: str) -> str:
    """Why ``rcpt`` cannot be a recipient, or "" when it can: one rule for the webmail, the
    submission port and ``manage.py send``. Looser than identity's rule for the addresses we
    host: another HISP's address with a 64-character local part or a quoted one can still
    be reached through its domain-bound certificate."""
    if mailtext.has_control_character(rcpt):
        # No path holds one (RFC 5321 4.1.2): it would be sent in RCPT as it is.
        return "not a Direct address (it holds a control character)"
    local, at, domain = rcpt.rpartition("@")
    if not rcpt.isascii():
        # An address beyond ASCII needs SMTPUTF8 (RFC 6531), which Direct does not support:
        # no HISP could take it, and it cannot even be written in an SMTP command here. A
        # domain name has an ASCII form (RFC 5890), which is worth saying.
        hint = ""
        if local.isascii():
            try:  # IDNA 2008 as identity stores hosted names (IDNA 2003 wrote faß as fass)
                hint = f"; write the domain in its ASCII form: {local}@{identity.normalise_domain(domain)}"
            except identity.IdentityError:
                pass
        return f"not a Direct address (must be plain ASCII{hint}): {rcpt}"
    # A Direct address names a DNS domain (its certificate is found in DNS or LDAP by that
    # name); an address literal such as [127.0.0.1] would aim egress at any host we can reach,
    # and so would a "domain" of digits only (RFC 3696 section 2: no top-level domain is
    # all-numeric), which an address lookup takes for an IPv4 address.
    if (
        not at
        or len(local) > MAX_LOCAL_PART
        or not _LOCAL_PART.match(local)
        or len(domain) > MAX_DOMAIN
        or not _DOMAIN.match(domain)
        or domain.rpartition(".")[2].isdigit()
    ):
        return f"not a Direct address: {rcpt}"
    return ""


def _repeated(
    message_id: str, *, sender: str, rcpts: list[str], raw: bytes, date_added: bool
) -> Message | None:
    """The stored submission that this one repeats, else None; another message under a
    Message-ID already sent is refused.

    A client that never got its reply to DATA (the connection, or the database's reply to our
    COMMIT, was lost) sends the same message again. It was queued the first time, so it is
    answered as stored rather than refused, which the client would show as a failure, and
    nothing goes out twice. Same sender, recipients and bytes; a Date we added ourselves, the
    first field, is the only difference allowed."""
    earlier = (
        Message.objects.filter(direction=Message.Direction.OUTBOUND, message_id=message_id)
        .defer("raw")
        .first()
    )
    if earlier is None:
        return None
    if earlier.envelope_from == sender and list(earlier.envelope_to) == rcpts:
        stored = bytes(Message.objects.values_list("raw", flat=True).get(pk=earlier.pk))
        if date_added:
            stored, raw = stored.partition(b"\r\n")[2], raw.partition(b"\r\n")[2]
        if stored == raw:
            log.info(
                "message %s submitted again (Message-ID already queued): answered as "
                "stored, sent once",
                earlier.pk,
            )
            return earlier
    raise SubmissionError(f"Message-ID {message_id} was already sent")


def _crlf_length(data: bytes) -> int:
    """The length of ``data`` once every bare LF has gained its CR."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")
