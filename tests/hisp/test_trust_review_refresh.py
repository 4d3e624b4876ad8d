"""Refreshes that meet each other or staff. Two refreshes of one bundle at once (the scheduled one, and staff applying one in the
console or running ``manage.py bundle refresh``) add each new anchor once. Before, the second
did not see the first's anchors and added them again; the bundle kept two rows for the anchor,
and when the publisher later dropped it only one was removed, so the domain went on trusting
an anchor its bundle no longer lists. A bundle staff remove while a refresh run is fetching
the bundles before it is passed over; before, the run stopped there with a database error and
the bundles after it waited for the next run."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from agent.types import Direction
from hisp.certificates import anchor_row
from hisp.models import TrustAnchor, TrustBundle
from hisp.services import identity, trust
from tests.adminconsole import pkitools
from tests.hisp.test_trust_review_anchors import _p7b


def _dsn() -> str:
    db = settings.DATABASES["default"]
    return (f"host={db['HOST']} port={db['PORT'] or 5432} user={db['USER']} "
            f"dbname={db['NAME']}" + (f" password={db['PASSWORD']}" if db["PASSWORD"] else ""))


def _waiting_on_a_lock(other: psycopg.Connection) -> bool:
    return bool(other.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'").fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_two_refreshes_at_once_add_a_new_anchor_once_and_its_removal_sticks() -> None:
    domain = identity.add_domain("hospital.example.org")
    first, second = pkitools.make_ca("First CA"), pkitools.make_ca("Second CA")
    bundle = trust.add_bundle(_p7b(first.certificate), domain=domain.name).bundle
    second_row = anchor_row(second.certificate)
    both = _p7b(first.certificate, second.certificate)
    with psycopg.connect(_dsn()) as other, psycopg.connect(_dsn(), autocommit=True) as watch:
        # The other refresh, half way: it added the new anchor and holds the bundle's row.
        other.execute(
            "INSERT INTO hisp_trustanchor (incoming, outgoing, confirmed_fingerprint, created_at,"
            " certificate_id, domain_id, bundle_id) VALUES (true, true, '', %s, %s, %s, %s)",
            [timezone.now(), second_row.pk, domain.pk, bundle.pk],
        )
        other.execute("UPDATE hisp_trustbundle SET last_result = 'ok' WHERE id = %s",
                      [bundle.pk])
        done: list[trust.RefreshOutcome] = []

        def refresh() -> None:
            try:
                done.append(trust.refresh_bundle(bundle, body=both, force=True))
            finally:
                connection.close()

        racer = threading.Thread(target=refresh)
        racer.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(watch) and time.monotonic() < deadline:
            time.sleep(0.05)
        other.commit()
        racer.join(10)
    assert done and not racer.is_alive()
    assert TrustAnchor.objects.filter(bundle=bundle, certificate=second_row).count() == 1
    trust.refresh_bundle(bundle, body=_p7b(first.certificate))
    assert second.certificate not in trust.anchors_for(domain.name, Direction.INCOMING)


@pytest.mark.django_db(transaction=True)
def test_a_bundle_removed_during_a_refresh_run_does_not_stop_the_bundles_after_it() -> None:
    domain = identity.add_domain("hospital.example.org")
    cas = {name: pkitools.make_ca(f"{name} CA") for name in ("a", "b", "c", "c2")}
    bodies = {name: _p7b(cas[name].certificate) for name in ("a", "b", "c")}
    removed: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            name = self.path.strip("/")
            if name == "a" and removed:  # staff remove bundle b while a is being fetched
                TrustBundle.objects.filter(pk=removed[0]).delete()
                connection.close()
            self.send_response(200)
            self.send_header("Content-Length", str(len(bodies[name])))
            self.end_headers()
            self.wfile.write(bodies[name])

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        added = {name: trust.add_bundle(base + name, domain=domain.name).bundle
                 for name in ("a", "b", "c")}
        removed.append(added["b"].pk)
        bodies["c"] = _p7b(cas["c"].certificate, cas["c2"].certificate)
        outcomes = trust.refresh_all()
    finally:
        server.shutdown()
        server.server_close()
    assert [o.bundle.pk for o in outcomes] == [added["a"].pk, added["c"].pk]
    assert outcomes[1].added == [cas["c2"].fingerprint]
    assert not TrustAnchor.objects.filter(bundle_id=added["b"].pk).exists()
