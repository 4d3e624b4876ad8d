"""``manage.py anchor import FILE --domain NAME [--incoming] [--outgoing]``,
``manage.py anchor export DOMAIN [--out FILE]`` and ``manage.py anchor list [--json]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from hisp.certificates import display_fingerprint
from hisp.management.cli import CLI_ACTOR, print_json, read_file, user_errors, write_output
from hisp.models import TrustAnchor
from hisp.services import trust


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
        listing = sub.add_parser("list", help="list trust anchors")
        listing.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        getattr(self, "_" + opts["action"])(opts)

    def _import(self, opts: dict[str, Any]) -> None:
        data = read_file(opts["file"])
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
                f"{row.certificate.subject}"
            )

    def _export(self, opts: dict[str, Any]) -> None:
        with user_errors():
            exported = trust.export_anchor(opts["domain"], actor=CLI_ACTOR)
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
                f"{row['subject']}"
            )
