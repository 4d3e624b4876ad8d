"""Sending from the webmail: build the MIME message and hand it to the mail flow's submission
service, which stores it, files it in Sent, audits it and queues protection and delivery."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import UploadedFile

from hisp.models import Address, MailboxEntry, Message
from hisp.services.compose import SubmissionError, build_message, submit
from webmail.content import open_message

__all__ = ["SubmissionError", "send"]


def send(
    *, address: Address, user: Any, to: list[str], cc: list[str], subject: str, body: str,
    uploads: list[UploadedFile], forward_of: MailboxEntry | None, delivery_notification: bool,
    client: str | None = None,
) -> Message:
    """Raises SubmissionError (its text is safe to show) when the mail flow refuses."""
    attachments = [
        (upload.name or "attachment", upload.content_type or "application/octet-stream",
         upload.read())
        for upload in uploads
    ]
    if forward_of is not None:
        attachments += [
            (a.filename, a.content_type, a.data) for a in open_message(forward_of.message).attachments
        ]
    raw = build_message(
        sender=address.address, sender_name=address.display_name, to=to, cc=cc, subject=subject,
        body_text=body, attachments=attachments, delivery_notification=delivery_notification,
    )
    return submit(address=address, raw=raw, actor=user, peer="webmail", client=client)
