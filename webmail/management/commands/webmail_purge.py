"""Purge Trash entries older than HISP_TRASH_RETENTION (also run by Celery beat)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from webmail.services import purge_trash


class Command(BaseCommand):
    help = "Purge mailbox entries that have been in Trash longer than HISP_TRASH_RETENTION."

    def handle(self, *args: Any, **options: Any) -> None:
        count = purge_trash()
        self.stdout.write(f"purged {count} entries")
