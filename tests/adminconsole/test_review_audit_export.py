"""An auditor can take the audit log out of the console: the events the filters select, as CSV,
oldest first, with cells a spreadsheet would run as formulas defused; the export is itself
audited. Before, the log could only be read page by page on screen (there was no export in the
console or the CLI)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from hisp.models import AuditEvent
from hisp.services import audit

EXPORT = "adminconsole:audit-export"
WHERE = "198.51.100.41"


def _rows(response: Any) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    text = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.reader(io.StringIO(text)))


def test_the_export_holds_the_filtered_events_oldest_first(
    staff_client: Client, sam: Any
) -> None:
    audit.record(action="address.activate", obj=("hisp.address", 1), actor="pat", note="first")
    audit.record(action="route.set", obj=("hisp.route", 2), actor="pat")
    audit.record(action="address.suspend", obj=("hisp.address", 1), actor="pat", note="second")
    rows = _rows(staff_client.get(reverse(EXPORT), {"action": "address."}))
    assert rows[0] == ["at", "actor", "action", "object_type", "object_id", "client_address",
                       "detail"]
    assert [(r[1], r[2], r[4]) for r in rows[1:]] == [
        ("pat", "address.activate", "1"), ("pat", "address.suspend", "1"),
    ]
    assert json.loads(rows[1][6]) == {"note": "first"}
    assert rows[1][0].endswith("+00:00")


def test_the_export_is_audited_with_its_filters_and_size(
    staff_client: Client, sam: Any
) -> None:
    audit.record(action="route.set", obj=("hisp.route", 2), actor="pat")
    rows = _rows(staff_client.get(reverse(EXPORT), {"actor": "pat"}, REMOTE_ADDR=WHERE))
    event = AuditEvent.objects.get(action="audit.export")
    assert (event.actor, event.client_address) == (sam, WHERE)
    assert event.detail == {"filters": {"actor": "pat"}, "events": 1}
    # The file describes the log as it was asked for: its own export event is not in it.
    assert [r[2] for r in rows[1:]] == ["route.set"]


def test_cells_a_spreadsheet_would_run_are_defused(staff_client: Client) -> None:
    audit.record(action="discovery.lookup", obj=("discovery", '=HYPERLINK("http://x")@p.net'),
                 actor="+cmd")
    rows = _rows(staff_client.get(reverse(EXPORT)))
    row = next(r for r in rows if r[2] == "discovery.lookup")
    assert row[1] == "'+cmd"
    assert row[4] == '\'=HYPERLINK("http://x")@p.net'


def test_refused_filters_export_nothing_and_say_why(staff_client: Client) -> None:
    response = staff_client.get(reverse(EXPORT), {"since": "2026-02-10", "until": "2026-01-01"})
    assert response.status_code == 400
    assert "The start date is after the end date." in response.content.decode()
    assert not AuditEvent.objects.filter(action="audit.export").exists()


def test_a_large_export_streams_in_a_few_queries(staff_client: Client) -> None:
    AuditEvent.objects.bulk_create(
        AuditEvent(actor_label="system", action="test.bulk", object_type="thing",
                   object_id=str(n), detail={}) for n in range(5000)
    )
    with CaptureQueriesContext(connection) as queries:
        rows = _rows(staff_client.get(reverse(EXPORT), {"action": "test.bulk"}))
    assert len(rows) == 5001
    assert len(queries) < 20


def test_the_log_page_links_to_the_export_with_its_filters(staff_client: Client) -> None:
    body = staff_client.get(reverse("adminconsole:audit-log"), {"actor": "pat"}).content.decode()
    assert f'{reverse(EXPORT)}?actor=pat' in body


def test_an_address_named_object_can_be_searched(staff_client: Client) -> None:
    long_address = "a" * 60 + "@" + "clinic-" * 10 + "example.org"
    audit.record(action="discovery.lookup", obj=("discovery", long_address), actor="pat")
    audit.record(action="discovery.lookup", obj=("discovery", "other@example.org"), actor="pat")
    response = staff_client.get(reverse("adminconsole:audit-log"), {"object_id": long_address})
    assert [e.object_id for e in response.context["page"]] == [long_address]


def test_a_non_staff_user_cannot_export(outsider_client: Client) -> None:
    assert outsider_client.get(reverse(EXPORT)).status_code == 404
    assert not AuditEvent.objects.filter(action="audit.export").exists()
