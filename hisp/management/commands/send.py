"""``manage.py send --from ADDRESS --to ADDRESS [--to ...] --subject S [--body-file F|-]
[--attach FILE ...] [--delivery-notification]``: queue an outgoing Direct message."""

from __future__ import annotations

import mimetypes
import os
import re
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from hisp.management.cli import CLI_ACTOR, read_file, user_errors
from hisp.management.commands import _arguments
from hisp.services.compose import SubmissionError, build_message, submit

_SURROGATE = re.compile("[\ud800-\udfff]")


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
        if _SURROGATE.search(opts["subject"]):
            # An argument that is not UTF-8 reaches Python as surrogates, which the header
            # encoder would send on as an "unknown-8bit" Subject.
            raise CommandError("--subject is not UTF-8 text")
        _arguments.text(opts["sender"], name="--from")
        for to in opts["to"]:
            _arguments.recipient(to, name="--to")
        for name in opts["attach"]:
            _arguments.path(name, name="--attach")
        body = ""
        if opts["body_file"] == "-":
            body = _read_stdin(opts.get("stdin") or sys.stdin)
        elif opts["body_file"]:
            try:
                body = read_file(_arguments.path(opts["body_file"], name="--body-file")).decode(
                    "utf-8"
                )
            except UnicodeDecodeError:
                raise CommandError(f"{opts['body_file']} is not UTF-8 text") from None
        attachments = []
        limit, total = settings.HISP_MAX_MESSAGE_BYTES, len(body)
        for path in opts["attach"]:
            data = read_file(path)
            total += len(data)
            if total > limit:  # refused here, before every file is in memory at once
                raise CommandError(
                    f"the body and attachments are larger than {limit} bytes "
                    "(HISP_MAX_MESSAGE_BYTES)"
                )
            kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
            # A file name that is not UTF-8 keeps its readable part (the rest shows as U+FFFD).
            name = os.fsencode(Path(path).name).decode("utf-8", "replace")
            attachments.append((name, kind, data))
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


def _read_stdin(stream: Any) -> str:
    """The body piped in, read as bytes and decoded strictly like --body-file (the text layer
    would pass bytes that are not UTF-8 on as surrogates, failing later with a codec error),
    and no more of it than a message may hold: ``yes | manage.py send ...`` must end in an
    error, not fill the memory."""
    limit = settings.HISP_MAX_MESSAGE_BYTES
    raw = getattr(stream, "buffer", None)
    data = (raw if raw is not None else stream).read(limit + 1)
    if len(data) > limit:
        raise CommandError(f"standard input: larger than {limit} bytes (HISP_MAX_MESSAGE_BYTES)")
    if isinstance(data, str):  # an in-process caller's text stream
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("standard input is not UTF-8 text") from None
