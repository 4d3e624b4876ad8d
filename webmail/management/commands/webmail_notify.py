"""Send the "a message is waiting" notices that are due (also run by Celery beat)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from webmail.services import send_waiting_notices


class Command(BaseCommand):
    help = "Send due 'a message is waiting' notices (no PHI) to users who opted in."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"sent {send_waiting_notices()} notices")
