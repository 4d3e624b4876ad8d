"""``manage.py address add ADDRESS [--name N] [--password-stdin] [--address-cert] [--patient]``
and ``manage.py address list [--json]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from hisp.management.cli import CLI_ACTOR, print_json, read_secret, user_errors
from hisp.models import Address, Certificate
from hisp.services import identity


class Command(BaseCommand):
    help = "Add and list hosted Direct addresses."
    stealth_options = ("stdin",)  # tests pass a stream instead of the process's stdin

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="create a hosted Direct address")
        add.add_argument("address")
        add.add_argument("--name", default="", help="display name")
        add.add_argument(
            "--password-stdin",
            action="store_true",
            help="read a password from stdin and create a user (username = the address)",
        )
        add.add_argument(
            "--address-cert", action="store_true", help="also issue an address-bound certificate"
        )
        add.add_argument("--patient", action="store_true", help="a patient's address")
        listing = sub.add_parser("list", help="list hosted addresses")
        listing.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["action"] == "add":
            password = read_secret(self._stdin(opts)) if opts["password_stdin"] else None
            with user_errors():
                added = identity.add_address(
                    opts["address"],
                    name=opts["name"],
                    password=password,
                    address_cert=opts["address_cert"],
                    patient=opts["patient"],
                    actor=CLI_ACTOR,
                )
            self.stdout.write(f"added {added.address} ({added.get_kind_display()})")
            return
        rows = []
        for address in Address.objects.select_related("domain").prefetch_related("users"):
            certificates = Certificate.objects.filter(
                binding=Certificate.Binding.ADDRESS,
                bound_name=address.address,
                revoked_at__isnull=True,
                superseded_by__isnull=True,
            )
            rows.append(
                {
                    "address": address.address,
                    "name": address.display_name,
                    "domain": address.domain.name,
                    "kind": address.kind,
                    "status": address.status,
                    "users": sorted(u.get_username() for u in address.users.all()),
                    "certificates": [
                        {"fingerprint": c.fingerprint_sha256, "usage": c.usage,
                         "not_after": c.not_after}
                        for c in certificates
                    ],
                }
            )
        if opts["json"]:
            print_json(self, rows)
            return
        for row in rows:
            self.stdout.write(f"{row['address']}\t{row['kind']}\t{row['status']}\t{row['name']}")

    def _stdin(self, opts: dict[str, Any]) -> Any:
        return opts.get("stdin")
