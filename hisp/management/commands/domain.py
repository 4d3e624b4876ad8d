"""``manage.py domain add NAME [--portal]`` and ``manage.py domain list [--json]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Count

from hisp.certificates import display_fingerprint
from hisp.management.cli import CLI_ACTOR, print_json, user_errors
from hisp.models import Domain
from hisp.services import identity


class Command(BaseCommand):
    help = "Add and list hosted domains."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="create a domain, its CA and a domain-bound certificate")
        add.add_argument("name")
        add.add_argument("--portal", action="store_true", help="a patient-portal domain")
        listing = sub.add_parser("list", help="list hosted domains")
        listing.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["action"] == "add":
            with user_errors():
                domain = identity.add_domain(opts["name"], portal=opts["portal"], actor=CLI_ACTOR)
            assert domain.issuing_ca is not None
            self.stdout.write(
                f"added {domain.name} ({domain.get_kind_display()}); CA SHA-256 fingerprint "
                f"{display_fingerprint(domain.issuing_ca.fingerprint_sha256)}"
            )
            return
        rows = [
            {
                "name": d.name,
                "kind": d.kind,
                "ca_fingerprint": d.issuing_ca.fingerprint_sha256 if d.issuing_ca else None,
                "addresses": d.address_count,
                "created_at": d.created_at,
            }
            for d in Domain.objects.select_related("issuing_ca").annotate(
                address_count=Count("addresses")
            )
        ]
        if opts["json"]:
            print_json(self, rows)
            return
        for row in rows:
            self.stdout.write(f"{row['name']}\t{row['kind']}\t{row['addresses']} addresses")
