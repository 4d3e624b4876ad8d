"""``manage.py send --from ADDRESS --to ADDRESS [--to ...] --subject S [--body-file F|-]
[--attach FILE ...] [--delivery-notification]``: queue an outgoing Direct message."""

from __future__ import annotations

import mimetypes
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hisp.management.cli import CLI_ACTOR, read_file, user_errors
from hisp.services.compose import SubmissionError, build_message, submit


class Command(BaseCommand):
    help = "Queue an outgoing Direct message as a hosted address."
    stealth_options = ("stdin",)  # callers in-process may pass the body stream

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="sender", required=True, metavar="ADDRESS")
        parser.add_argument("--to", action="append", required=True, metavar="ADDRESS")
        parser.add_argument("--subject", required=True)
        parser.add_argument("--body-file", metavar="F|-", help="body text from a file or stdin")
        parser.add_argument("--attach", action="append", default=[], metavar="FILE")
        parser.add_argument(
            "--delivery-notification",
            action="store_true",
            help="request timely and reliable delivery (a dispatched MDN)",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        body = ""
        if opts["body_file"] == "-":
            body = (opts.get("stdin") or sys.stdin).read()
        elif opts["body_file"]:
            try:
                body = read_file(opts["body_file"]).decode("utf-8")
            except UnicodeDecodeError:
                raise CommandError(f"{opts['body_file']} is not UTF-8 text") from None
        attachments = []
        for path in opts["attach"]:
            data = read_file(path)
            kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
            attachments.append((Path(path).name, kind, data))
        with user_errors(SubmissionError):
            raw = build_message(
                sender=opts["sender"],
                to=opts["to"],
                subject=opts["subject"],
                body_text=body,
                attachments=attachments,
                delivery_notification=opts["delivery_notification"],
            )
            message = submit(address=opts["sender"], raw=raw, actor=CLI_ACTOR, peer="cli")
        self.stdout.write(f"queued message {message.pk} {message.message_id}")
