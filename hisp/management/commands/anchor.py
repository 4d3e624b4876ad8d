"""``manage.py anchor import FILE --domain NAME [--incoming] [--outgoing]``,
``manage.py anchor export DOMAIN [--out FILE] [--next]``, ``manage.py anchor list [--json]`` and
``manage.py anchor rollover DOMAIN [--activate] [--json]`` (replacing our own issuing CA, see
hisp.services.ca_rollover)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from hisp.certificates import display_fingerprint
from hisp.management.cli import (
    CLI_ACTOR,
    print_json,
    read_file,
    shown,
    user_errors,
    write_output,
)
from hisp.management.commands import _arguments
from hisp.models import TrustAnchor
from hisp.services import ca_rollover, trust


class Command(BaseCommand):
    help = "Import, export and list trust anchors."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        imp = sub.add_parser("import", help="trust a CA (PEM/DER certificate or PKCS#7 bundle)")
        imp.add_argument("file")
        imp.add_argument("--domain", required=True, help="the hosted domain that trusts it")
        imp.add_argument("--incoming", action="store_true", help="for mail we receive")
        imp.add_argument("--outgoing", action="store_true", help="for mail we send")
        exp = sub.add_parser("export", help="PEM of the CA that issues this domain's certificates")
        exp.add_argument("domain")
        exp.add_argument("--out", help="write to this file instead of stdout")
        exp.add_argument("--next", action="store_true",
                         help="the successor CA of a rollover under way (for partners to import)")
        listing = sub.add_parser("list", help="list trust anchors")
        listing.add_argument("--json", action="store_true")
        roll = sub.add_parser(
            "rollover",
            help="replace the domain's issuing CA: first prepare the successor (partners import "
            "it with 'anchor export DOMAIN --next'), later --activate it",
        )
        roll.add_argument("domain")
        roll.add_argument("--activate", action="store_true",
                          help="issue from the prepared successor and renew every certificate")
        roll.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        getattr(self, "_" + opts["action"])(opts)

    def _import(self, opts: dict[str, Any]) -> None:
        data = read_file(_arguments.path(opts["file"], name="FILE"))
        # Neither flag means both directions.
        both = not (opts["incoming"] or opts["outgoing"])
        with user_errors():
            rows = trust.import_anchors(
                data,
                domain=opts["domain"],
                incoming=both or opts["incoming"],
                outgoing=both or opts["outgoing"],
                actor=CLI_ACTOR,
            )
        for row in rows:
            self.stdout.write(
                f"SHA-256 fingerprint {display_fingerprint(row.certificate.fingerprint_sha256)}  "
                f"{shown(row.certificate.subject)}"
            )

    def _export(self, opts: dict[str, Any]) -> None:
        if opts["out"]:
            _arguments.path(opts["out"], name="--out")
        with user_errors():
            exported = trust.export_anchor(opts["domain"], successor=opts["next"], actor=CLI_ACTOR)
        write_output(self, exported.pem, opts["out"])
        # With the PEM on stdout the fingerprint goes to stderr, keeping stdout a clean PEM.
        stream = self.stdout if opts["out"] else self.stderr
        stream.write(f"SHA-256 fingerprint {exported.fingerprint}")

    def _list(self, opts: dict[str, Any]) -> None:
        rows = [
            {
                "domain": a.domain.name,
                "fingerprint": a.certificate.fingerprint_sha256,
                "subject": a.certificate.subject,
                "incoming": a.incoming,
                "outgoing": a.outgoing,
                "bundle": a.bundle.name if a.bundle else None,
                "not_after": a.certificate.not_after,
            }
            for a in TrustAnchor.objects.select_related("domain", "certificate", "bundle").order_by(
                "domain__name", "pk"
            )
        ]
        if opts["json"]:
            print_json(self, rows)
            return
        for row in rows:
            directions = "+".join(d for d in ("incoming", "outgoing") if row[d])
            self.stdout.write(
                f"{row['domain']}\t{directions}\t{display_fingerprint(row['fingerprint'])}\t"
                f"{shown(row['subject'])}"
            )

    def _rollover(self, opts: dict[str, Any]) -> None:
        with user_errors():
            if opts["activate"]:
                done = ca_rollover.activate(opts["domain"], actor=CLI_ACTOR)
                result = {
                    "step": "activated",
                    "fingerprint": done.ca.fingerprint_sha256,
                    "previous": done.previous.fingerprint_sha256,
                    "domains": done.domains,
                    "renewed": [c.fingerprint_sha256 for c in done.renewed],
                }
            else:
                ca = ca_rollover.prepare(opts["domain"], actor=CLI_ACTOR)
                result = {
                    "step": "prepared",
                    "fingerprint": ca.fingerprint_sha256,
                    "subject": ca.subject,
                    "not_after": ca.not_after,
                }
        if opts["json"]:
            print_json(self, result)
        elif result["step"] == "prepared":
            self.stdout.write(
                f"successor CA prepared: SHA-256 fingerprint "
                f"{display_fingerprint(result['fingerprint'])}\n"
                f"send it to partners ('manage.py anchor export {opts['domain']} --next'), and "
                f"once they trust it run 'manage.py anchor rollover {opts['domain']} --activate'"
            )
        else:
            self.stdout.write(
                f"now issuing from {display_fingerprint(result['fingerprint'])} for "
                f"{', '.join(result['domains'])}; {len(result['renewed'])} certificate(s) renewed"
            )
