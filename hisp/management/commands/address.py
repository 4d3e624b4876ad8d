"""``manage.py address add ADDRESS [--name N] [--password-stdin] [--address-cert] [--patient]``
and ``manage.py address list [--json]``."""

from __future__ import annotations

import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hisp.management.cli import CLI_ACTOR, print_json, read_secret, shown, user_errors
from hisp.models import Address, Certificate
from hisp.services import identity

_NOT_TYPABLE = re.compile("[\x00\ud800-\udfff]")


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
            name = _display_name(opts["name"])
            password = read_secret(self._stdin(opts)) if opts["password_stdin"] else None
            if password is not None and _NOT_TYPABLE.search(password):
                # Surrogates: bytes that were not UTF-8 (the hasher cannot encode them); a NUL:
                # refused by every sign-in form. Either way an account no one could sign in to.
                raise CommandError(
                    "--password-stdin: the password must be UTF-8 text without NUL characters"
                )
            with user_errors():
                added = identity.add_address(
                    opts["address"],
                    name=name,
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
                        {
                            "fingerprint": c.fingerprint_sha256,
                            "usage": c.usage,
                            "not_after": c.not_after,
                        }
                        for c in certificates
                    ],
                }
            )
        if opts["json"]:
            print_json(self, rows)
            return
        for row in rows:
            # shown(): a name stored before names were checked may hold a terminal escape.
            name = shown(row["name"])
            self.stdout.write(f"{row['address']}\t{row['kind']}\t{row['status']}\t{name}")

    def _stdin(self, opts: dict[str, Any]) -> Any:
        return opts.get("stdin")


def _display_name(value: str) -> str:
    """identity's rule for a display name (plain text, one line, the column's length), its
    refusal named after the option."""
    try:
        return identity.normalise_display_name(value)
    except identity.IdentityError as exc:
        raise CommandError(f"--name: {exc}") from None
