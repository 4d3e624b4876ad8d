"""``manage.py dnszone DOMAIN [--full]``: our records for a hosted domain as a zone-file
fragment (the same records ``rundns`` serves), for operators who run their own DNS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from hisp.dns.records import PublicationError
from hisp.management.cli import user_errors


class Command(BaseCommand):
    help = "Print a hosted domain's CERT, MX, SRV and address records as a zone-file fragment."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("domain")
        parser.add_argument(
            "--full", action="store_true", help="a complete zone file ($ORIGIN, SOA and NS too)"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        from hisp.dns.zonefile import zone_text

        with user_errors(PublicationError):
            text = zone_text(opts["domain"], full=opts["full"])
        self.stdout.write(text, ending="")
