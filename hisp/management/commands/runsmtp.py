"""Run backbone SMTP ingress, the submission port and POP3S retrieval until interrupted."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from hisp.management.commands import _arguments


class Command(BaseCommand):
    help = (
        "Run the backbone SMTP listener (STARTTLS offered), the submission port and, when its "
        "port is set, POP3 retrieval over implicit TLS."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default=None, help="address to listen on")
        parser.add_argument("--port", type=int, default=None, help="backbone port (0: closed)")
        parser.add_argument(
            "--submission-port", type=int, default=None, help="submission port (0: closed)"
        )
        parser.add_argument(
            "--pop3-port",
            type=int,
            default=None,
            help="POP3S port, implicit TLS (default HISP_POP3_PORT; 0: closed)",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        from hisp.services import mail
        from hisp.smtp import server

        bind = _arguments.text(opts["bind"] or settings.HISP_SMTP_BIND, name="--bind")
        port = settings.HISP_SMTP_PORT if opts["port"] is None else opts["port"]
        submission = (
            settings.HISP_SUBMISSION_PORT
            if opts["submission_port"] is None
            else opts["submission_port"]
        )
        pop3 = settings.HISP_POP3_PORT if opts["pop3_port"] is None else opts["pop3_port"]
        for name, value in (
            ("--port", port),
            ("--submission-port", submission),
            ("--pop3-port", pop3),
        ):
            if not 0 <= value <= 65535:
                raise CommandError(f"{name} must be between 0 and 65535")
        if not port and not submission and not pop3:
            raise CommandError("both ports are 0: nothing to run")
        if settings.HISP_INGRESS_BATCH < 1 or settings.HISP_INGRESS_LINGER_MS < 0:
            raise CommandError("HISP_INGRESS_BATCH must be at least 1 and "
                               "HISP_INGRESS_LINGER_MS at least 0")
        if settings.HISP_INGRESS_BATCH > 1 and settings.HISP_INGRESS_LINGER_MS > 0:
            mail.publish_incoming_in_batches(
                size=settings.HISP_INGRESS_BATCH, linger=settings.HISP_INGRESS_LINGER_MS / 1000
            )
        try:
            listeners = server.start(
                bind=bind, port=port, submission_port=submission, pop3_port=pop3
            )
        except (OSError, RuntimeError) as exc:
            mail.stop_incoming_batches()
            raise CommandError(f"cannot start SMTP listeners: {exc}") from None
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        if port:
            self.stdout.write(f"SMTP backbone listening on {bind}:{port}")
        if submission:
            self.stdout.write(f"SMTP submission listening on {bind}:{submission}")
        if pop3:
            self.stdout.write(f"POP3S (implicit TLS) listening on {bind}:{pop3}")
        self.stdout.flush()
        try:
            while not stop.wait(1.0):
                pass
        finally:
            listeners.stop()
            mail.stop_incoming_batches()  # after the listeners: no message is accepted now
