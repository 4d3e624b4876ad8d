"""``manage.py ldif DOMAIN [--base-dn DN]``: our certificates for a hosted domain as LDIF
(inetOrgPerson entries with ``mail`` and the certificates), for an operator's directory."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from hisp.dns.records import PublicationError
from hisp.management.cli import user_errors


class Command(BaseCommand):
    help = "Print a hosted domain's certificates as LDIF (inetOrgPerson, userSMIMECertificate)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("domain")
        parser.add_argument(
            "--base-dn", default=None, help="parent entry (default: dc= labels of the domain)"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        from hisp.directory import ldif_text

        with user_errors(PublicationError):
            text = ldif_text(opts["domain"], base_dn=opts["base_dn"])
        self.stdout.write(text, ending="")
