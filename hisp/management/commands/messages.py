"""``manage.py messages --json [--direction in|out]``: the message log with its deliveries."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Prefetch

from hisp.management.cli import CLI_ACTOR, print_json
from hisp.models import Delivery, Message
from hisp.services import audit


class Command(BaseCommand):
    help = "The message log: every message in and out, with per-recipient delivery state."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--direction", choices=["in", "out"])

    def handle(self, *args: Any, **opts: Any) -> None:
        messages = Message.objects.defer("raw", "content").prefetch_related(
            Prefetch("deliveries", queryset=Delivery.objects.defer("wire").order_by("id"))
        )
        if opts["direction"]:
            messages = messages.filter(direction=opts["direction"])
        rows = [
            {
                "id": m.pk,
                "message_id": m.message_id,
                "direction": m.direction,
                "from": m.envelope_from or m.header_from,
                "to": list(m.envelope_to),
                "subject": m.subject,
                "state": m.state,
                "reason": m.reason or None,
                "created_at": m.created_at,
                "deliveries": [
                    {
                        "recipient": d.recipient,
                        "state": d.state,
                        "detail": d.detail,
                        "updated_at": d.updated_at,
                    }
                    for d in m.deliveries.all()
                ],
            }
            for m in messages.order_by("-created_at", "-id")
        ]
        # Who wrote to whom, and about what, is mail metadata: recorded before it is shown, as
        # the console records every showing of its message list, with the ids shown.
        audit.record(
            action="message.cli-list",
            obj=("cli-list", "messages"),
            actor=CLI_ACTOR,
            direction=opts["direction"],
            results=len(rows),
            shown=[row["id"] for row in rows],
        )
        if opts["json"]:
            print_json(self, rows)
            return
        for row in rows:
            self.stdout.write(
                f"{row['id']}\t{row['direction']}\t{row['state']}\t{row['from']}\t{row['subject']}"
            )
