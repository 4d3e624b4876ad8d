"""Sending through the mail API: the request's fields checked one by one, the sender's grant,
and ``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key-header), so a program that lost our
answer can send the same request again without the message going out twice.

The message itself is built and submitted by the mail flow's own services
(hisp.services.compose), as the webmail and the submission port do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from hisp import mailtext
from hisp.models import Address, Message
from hisp.services.compose import AttachmentData, build_message, recipient_refusal
from webmail import access
from webmail.api.responses import ApiError
from webmail.models import ApiSubmission

# A program retries within minutes, or after an outage of a day or two; a key is kept a week,
# then forgotten (webmail.tasks.forget_idempotency_keys), and the same key sends again.
KEY_LIFETIME = timedelta(days=7)
PEER = "api"  # Message.peer and the audit event's "via": how the message came in
MAX_KEY_CHARS = 200
_FIELDS = frozenset({
    "from", "to", "cc", "bcc", "subject", "text", "attachments", "delivery_notification",
})
_ATTACHMENT_FIELDS = frozenset({"filename", "content_type", "content_base64"})


def bad_field(name: str, message: str) -> ApiError:
    return ApiError(400, "bad-field", f"{name}: {message}")


@dataclass(frozen=True)
class Composed:
    """A JSON request's message, checked: ``bcc`` travels only in the envelope."""

    sender: str
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    text: str = ""
    attachments: list[AttachmentData] = field(default_factory=list)
    delivery_notification: bool = True

    @property
    def recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]

    def mime(self, address: Address) -> bytes:
        # build_message writes no Bcc field: blind recipients are given to submit as the
        # envelope instead, so no recipient's copy names them (RFC 5322 section 3.6.3).
        return build_message(
            sender=address.address, sender_name=address.display_name, to=self.to, cc=self.cc,
            subject=self.subject, body_text=self.text, attachments=self.attachments,
            delivery_notification=self.delivery_notification,
        )


def _string(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise bad_field(name, "must be a string" + ("" if value is not None else " (required)"))
    try:
        # JSON's \ud800 escapes make lone surrogates, which no mail encoding can write.
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_field(name, "is not valid Unicode text") from None
    return value


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str:
    return _string(body.get(name, None if required else ""), name)


def _addresses(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_field(name, "must be a list of address strings")
    for index, address in enumerate(value):
        # Each element is one recipient: "a@x, b@y" would name two in the header and one
        # (unknown) in the envelope.
        refusal = recipient_refusal(address.strip())
        if refusal:
            raise bad_field(f"{name}[{index}]", mailtext.printable(refusal))
    return [v.strip() for v in value]


def _attachment(value: object, name: str) -> AttachmentData:
    if not isinstance(value, dict):
        raise bad_field(name, "must be an object with filename, content_type, content_base64")
    unknown = sorted(set(value) - _ATTACHMENT_FIELDS)
    if unknown:
        raise bad_field(f"{name}.{unknown[0]}", "unknown field")
    parts = {part: _string(value.get(part), f"{name}.{part}") for part in sorted(_ATTACHMENT_FIELDS)}
    try:
        # Strict: a character outside the alphabet or wrong padding is a damaged file, not one
        # to send with its bad bytes skipped.
        data = base64.b64decode(parts["content_base64"], validate=True)
    except (binascii.Error, ValueError):
        raise bad_field(f"{name}.content_base64", "is not valid base64") from None
    return parts["filename"], parts["content_type"], data


def composed(body: dict[str, Any]) -> Composed:
    """The JSON request's fields, each checked for its type; the first wrong one is named."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise bad_field(unknown[0], "unknown field")
    attachments = body.get("attachments", [])
    if not isinstance(attachments, list):
        raise bad_field("attachments", "must be a list of objects")
    notify = body.get("delivery_notification", True)
    if not isinstance(notify, bool):
        raise bad_field("delivery_notification", "must be true or false")
    message = Composed(
        sender=_text(body, "from", required=True).strip(),
        to=_addresses(body, "to"),
        cc=_addresses(body, "cc"),
        bcc=_addresses(body, "bcc"),
        subject=_text(body, "subject"),
        text=_text(body, "text"),
        attachments=[_attachment(a, f"attachments[{i}]") for i, a in enumerate(attachments)],
        delivery_notification=notify,
    )
    if not message.to:
        # build_message (as the webmail) needs a To; Cc and Bcc only add to it.
        raise bad_field("to", "at least one recipient is required")
    return message


def raw_sender(raw: bytes) -> str:
    """The From address of a raw message (submit checks the rest of its header)."""
    try:
        found = mailtext.addresses(mailtext.parse(mailtext.head_of(raw)), "From")
    except Exception:  # noqa: BLE001 - any failure of the email parser on outside bytes
        found = ()
    if len(found) != 1:
        raise ApiError(422, "refused", "the message must have a From field with one address")
    return found[0]


def sending_address(user: AbstractBaseUser, address: str) -> Address:
    """The active address ``user`` may send as (owner or read-and-send delegate).

    One answer for "not yours", "read only", "inactive" and "no such address": a program
    probing addresses learns nothing about the ones it holds no grant on."""
    grant = access.grants(user).filter(address__address__iexact=address).first()
    if grant is None or not grant.may_send:
        raise ApiError(403, "sender-not-allowed", "you may not send as this address")
    return grant.address


def idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY_CHARS or not all(" " <= c <= "~" for c in value):
        raise ApiError(400, "bad-idempotency-key",
                       f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable ASCII characters")
    return value


def digest(media_type: str, body: bytes) -> str:
    return hashlib.sha256(media_type.encode("ascii", "replace") + b"\n" + body).hexdigest()


def _earlier(user: AbstractBaseUser, key: str, request_digest: str) -> Message | None:
    """The message an earlier request with ``key`` sent, None for a key not used yet."""
    row = ApiSubmission.objects.filter(user_id=user.pk, key=key).select_related("message").first()
    if row is None:
        return None
    if row.digest != request_digest:
        raise ApiError(422, "idempotency-key-reused",
                       "this Idempotency-Key was used for a different request")
    assert row.message is not None  # set in the transaction that inserted the row
    # The first answer names the message (its ids, its recipients): only for a caller who may
    # still send as its address, as the first request had to.
    sending_address(user, row.message.envelope_from)
    return row.message


def submit_once(
    *, user: AbstractBaseUser, key: str | None, request_digest: str,
    submit: Callable[[], Message],
) -> tuple[Message, bool]:
    """``submit()`` unless an earlier request with ``key`` did it: (message, replayed)."""
    if key is None:
        return submit(), False
    earlier = _earlier(user, key, request_digest)
    if earlier is not None:
        return earlier, True
    try:
        with transaction.atomic():
            # Inserted first: a concurrent request with the same key blocks on the unique
            # index here until this transaction ends, and never reaches submit alongside it.
            # A refusal rolls the row back with the message, so the key stays free.
            row = ApiSubmission.objects.create(user=user, key=key, digest=request_digest)
            row.message = submit()
            row.save(update_fields=["message"])
            return row.message, False
    except IntegrityError:
        earlier = _earlier(user, key, request_digest)
        if earlier is None:
            raise
        return earlier, True


def forget_old_keys(*, now: datetime | None = None) -> int:
    """Delete the keys older than KEY_LIFETIME; how many."""
    before = (now or timezone.now()) - KEY_LIFETIME
    deleted, _ = ApiSubmission.objects.filter(created_at__lt=before).delete()
    return deleted
