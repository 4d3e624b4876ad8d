"""``manage.py route set DOMAIN HOST:PORT|MX``, ``route delete DOMAIN``, ``route list [--json]``.

``MX`` keeps the domain's MX records and applies the route's policies to them."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from hisp.management.cli import CLI_ACTOR, print_json, user_errors
from hisp.models import Route
from hisp.services import routes


class Command(BaseCommand):
    help = ("Routes: deliver a destination domain to HOST:PORT instead of its MX records, or "
            "keep them (MX) with the route's policies.")

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        set_ = sub.add_parser("set", help="route DOMAIN to HOST:PORT, or MX for its MX records")
        set_.add_argument("domain")
        set_.add_argument("target", metavar="HOST:PORT|MX")
        set_.add_argument("--require-tls", action="store_true", default=None,
                          help="fail over to retry unless the server offers STARTTLS")
        set_.add_argument("--hold-pending-certificate", action="store_true", default=None,
                          help="hold messages without a recipient certificate instead of failing")
        delete = sub.add_parser("delete", help="remove the route of DOMAIN")
        delete.add_argument("domain")
        listing = sub.add_parser("list", help="list routes")
        listing.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        action = opts["action"]
        if action == "set":
            with user_errors():
                route = routes.set_route(
                    opts["domain"],
                    opts["target"],
                    require_tls=opts["require_tls"],
                    hold_pending_certificate=opts["hold_pending_certificate"],
                    actor=CLI_ACTOR,
                )
            self.stdout.write(f"route {route.domain} -> {route.target}")
            return
        if action == "delete":
            with user_errors():
                routes.delete_route(opts["domain"], actor=CLI_ACTOR)
            self.stdout.write(f"route {opts['domain']} deleted")
            return
        rows = [
            {
                "domain": r.domain,
                "host": r.host,
                "port": r.port,
                "require_tls": r.require_tls,
                "hold_pending_certificate": r.hold_pending_certificate,
            }
            for r in Route.objects.all()
        ]
        if opts["json"]:
            print_json(self, rows)
            return
        for row in rows:
            self.stdout.write(f"{row['domain']}\t{row['host']}:{row['port']}" if row["host"]
                              else f"{row['domain']}\tMX")
