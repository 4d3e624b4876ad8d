"""``manage.py discovery lookup ADDRESS [--json]`` and ``manage.py discovery flush
ADDRESS_OR_DOMAIN``: what certificate discovery finds for an address, level by level, and
dropping cached results (after a partner fixed its DNS or directory)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from hisp.discovery import DiscoveryError, flush, lookup_report
from hisp.management.cli import CLI_ACTOR, print_json, shown, user_errors
from hisp.management.commands import _arguments
from hisp.services import audit


class Command(BaseCommand):
    help = "Look up a Direct address's certificates level by level, or flush cached results."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        lookup = sub.add_parser("lookup", help="every discovery level for an address")
        lookup.add_argument("address")
        lookup.add_argument("--json", action="store_true")
        drop = sub.add_parser("flush", help="forget cached results for an address or domain")
        drop.add_argument("entry", metavar="ADDRESS_OR_DOMAIN")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["action"] == "flush":
            with user_errors(DiscoveryError):
                entry = flush(_arguments.text(opts["entry"], name="ADDRESS_OR_DOMAIN"))
            # AuditEvent.object_id holds 64 characters; addresses may be longer (RFC 5321 4.5.3.1).
            audit.record(
                action="discovery.flush", obj=("discovery", entry[:64]), actor=CLI_ACTOR, entry=entry
            )
            self.stdout.write(f"flushed cached discovery results for {entry}")
            return
        with user_errors(DiscoveryError):
            report = lookup_report(_arguments.text(opts["address"], name="ADDRESS"))
        # Whose certificates the operator looked for, as the console's discovery page records.
        audit.record(
            action="discovery.lookup",
            obj=("discovery", report.address),
            actor=CLI_ACTOR,
            levels=[f"{lv.source}/{lv.binding}:{len(lv.certificates)}" for lv in report.levels],
        )
        if opts["json"]:
            print_json(self, report.as_dict())
            return
        self.stdout.write(f"{report.address} ({'hosted here' if report.hosted else 'remote'})")
        for level in report.levels:
            self.stdout.write(
                f"  {level.source} {level.binding}-bound: {len(level.certificates)} certificate(s)"
                f" in {level.seconds:.3f}s"
            )
            for cert in level.certificates:
                state = "current" if cert.current else "not current"
                self.stdout.write(
                    f"    {shown(cert.subject)} serial {cert.serial} until {cert.not_after:%Y-%m-%d}"
                    f" ({state}) sha256 {cert.fingerprint_sha256}"
                )
            if level.error:
                self.stdout.write(f"    error: {shown(level.error)}")
            for note in level.notes:
                self.stdout.write(f"    note: {shown(note)}")
