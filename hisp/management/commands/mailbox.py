"""``manage.py mailbox ADDRESS --json``: the messages delivered to a hosted address, newest
first."""

from __future__ import annotations

from email.utils import parseaddr
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from hisp import mailtext
from hisp.management.cli import CLI_ACTOR, print_json
from hisp.management.commands import _arguments
from hisp.models import Delivery, MailboxEntry
from hisp.services import audit
from hisp.services.mail import find_address


class Command(BaseCommand):
    help = "List the messages in a hosted address's mailbox."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("address")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        address = find_address(_arguments.text(opts["address"], name="ADDRESS"))
        if address is None:
            raise CommandError(f"{opts['address']} is not an address hosted here")
        entries = (
            MailboxEntry.objects.filter(address=address)
            .exclude(folder__in=[MailboxEntry.SystemFolder.SENT, MailboxEntry.SystemFolder.DRAFTS])
            .select_related("message")
            .order_by("-received_at", "-id")
        )
        rows = [self._row(entry) for entry in entries]
        if opts["json"]:
            # Each body shown is a message opened, audited as the webmail audits opening one
            # (the plain listing, like an inbox page, shows no body).
            with transaction.atomic():
                for entry in entries:
                    audit.record(
                        action="message.open",
                        obj=entry.message,
                        actor=CLI_ACTOR,
                        entry=entry.pk,
                        mailbox=entry.address_id,
                    )
            print_json(self, rows)
            return
        # The plain listing shows no body but who wrote and the subjects: recorded as the
        # console records a message list, with the entries shown.
        audit.record(
            action="mailbox.cli-list",
            obj=address,
            actor=CLI_ACTOR,
            mailbox=address.pk,
            results=len(rows),
            shown=[row["id"] for row in rows],
        )
        for row in rows:
            self.stdout.write(f"{row['received_at']}\t{row['from']}\t{row['subject']}")

    def _row(self, entry: MailboxEntry) -> dict[str, Any]:
        message = entry.message
        content = bytes(message.content or message.raw)
        summary = mailtext.summarise(content)
        trusted = (
            message.kind == message.Kind.REGULAR
            and Delivery.objects.filter(
                message=message,
                recipient__iexact=entry.address.address,
                state=Delivery.State.DELIVERED,
            ).exists()
        )
        return {
            "id": entry.pk,
            "message_id": message.message_id,
            "from": parseaddr(entry.sender)[1] or entry.sender,
            "to": list(entry.recipients),
            "subject": entry.subject,
            "received_at": entry.received_at,
            "body_text": entry.body_text,
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": a.size}
                for a in summary.attachments
            ],
            "signer": message.signer or None,
            "trusted": trusted,
        }
