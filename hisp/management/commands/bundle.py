"""``manage.py bundle add URL_OR_FILE --domain NAME``, ``manage.py bundle refresh`` and
``manage.py bundle list [--json]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count

from hisp.management.cli import CLI_ACTOR, one_line, print_json, read_file, user_errors
from hisp.management.commands import _arguments
from hisp.models import TrustBundle
from hisp.services import trust
from hisp.services.identity import normalise_domain


class Command(BaseCommand):
    help = "Add, refresh and list trust bundles."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="add a bundle by URL (refreshed on schedule) or file")
        add.add_argument("source", metavar="URL_OR_FILE")
        add.add_argument("--domain", required=True, help="the hosted domain that trusts it")
        sub.add_parser("refresh", help="refresh every bundle now")
        listing = sub.add_parser("list", help="list trust bundles")
        listing.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        getattr(self, "_" + opts["action"])(opts)

    def _add(self, opts: dict[str, Any]) -> None:
        source: str | bytes = opts["source"]
        if str(source).lower().startswith(("http://", "https://")):
            _arguments.text(str(source), name="URL")
        else:
            source = read_file(_arguments.path(str(source), name="FILE"))
        with user_errors():
            if isinstance(source, bytes):
                _refuse_a_second_copy(source, domain=opts["domain"])
            outcome = trust.add_bundle(source, domain=opts["domain"], actor=CLI_ACTOR)
        self.stdout.write(
            f"added bundle {outcome.bundle.pk} ({outcome.bundle.name}): "
            f"{len(outcome.added)} anchors, SHA-256 {outcome.bundle.last_digest}"
        )

    def _refresh(self, opts: dict[str, Any]) -> None:
        outcomes = trust.refresh_all()
        for outcome in outcomes:
            line = f"bundle {outcome.bundle.pk} ({outcome.bundle.name}): {outcome.result}"
            if outcome.result == TrustBundle.Result.OK:
                line += f", {len(outcome.added)} added, {len(outcome.removed)} removed"
            if outcome.error:
                line += f": {one_line(outcome.error)}"
            self.stdout.write(line)
        failed = [o for o in outcomes if o.failed]
        if failed:
            raise CommandError(
                f"{len(failed)} of {len(outcomes)} bundles failed to refresh "
                "(their existing anchors are kept)"
            )

    def _list(self, opts: dict[str, Any]) -> None:
        rows = [
            {
                "id": b.pk,
                "name": b.name,
                "url": b.url or None,
                "domain": b.domain.name,
                "incoming": b.incoming,
                "outgoing": b.outgoing,
                "anchors": b.anchor_count,
                "signer_pinned": bool(b.signer_pin),
                "last_result": b.last_result,
                "last_error": b.last_error,
                "last_fetched_at": b.last_fetched_at,
                "last_digest": b.last_digest,
            }
            for b in TrustBundle.objects.select_related("domain")
            .annotate(anchor_count=Count("anchors"))
            .order_by("pk")
        ]
        if opts["json"]:
            print_json(self, rows)
            return
        for row in rows:
            self.stdout.write(
                f"{row['id']}\t{row['domain']}\t{row['anchors']} anchors\t{row['last_result']}\t"
                f"{row['url'] or row['name']}"
            )


def _refuse_a_second_copy(data: bytes, *, domain: str) -> None:
    """A file already added for the domain: as the service refuses a URL added twice. A script
    run again would otherwise add a second bundle with the same anchors, and removing one of
    them would leave every anchor trusted through the other."""
    for bundle in TrustBundle.objects.filter(domain__name=normalise_domain(domain), url=""):
        if bytes(bundle.uploaded or b"") == data:
            raise CommandError(
                f"bundle {bundle.pk} ({bundle.name}) already holds this file for "
                f"{bundle.domain.name}"
            )
