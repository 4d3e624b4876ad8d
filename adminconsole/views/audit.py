"""The audit log, filterable and paginated, and its export as CSV. Reading or exporting it is
itself audited."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from adminconsole.access import needs, staff_required
from adminconsole.forms.operations import AuditFilterForm
from adminconsole.roles import Role
from adminconsole.views.common import paginate, query_without_page
from hisp.models import AuditEvent
from hisp.services import audit

EXPORT_COLUMNS = ("at", "actor", "action", "object_type", "object_id", "client_address", "detail")
# Rows fetched per round trip while streaming: memory stays flat for millions of events.
EXPORT_CHUNK = 2000
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection, OWASP):
# actor labels, object ids and details can carry what a partner's server or a sender typed.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _page(request: HttpRequest, form: AuditFilterForm, *, status: int = 200) -> HttpResponse:
    events = AuditEvent.objects.all()
    filters: dict[str, str] = {}
    if form.is_valid():
        events = form.filter(events)
        filters = form.used_filters()
    page = paginate(request, events)
    # Read the page before recording, so this view does not list its own event.
    page.object_list = list(page.object_list)
    audit.record(
        action="audit.view",
        obj=("audit", "log"),
        request=request,
        filters=filters,
        page=page.number,
    )
    return render(
        request,
        "adminconsole/audit_log.html",
        {"form": form, "page": page, "query": query_without_page(request)},
        status=status,
    )


@staff_required
@needs(Role.AUDIT)
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    return _page(request, AuditFilterForm(request.GET or None))


def _cell(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA_START) else value


def _rows(events: Iterator[AuditEvent]) -> Iterator[list[str]]:
    yield list(EXPORT_COLUMNS)
    for event in events:
        yield [
            _cell(value)
            for value in (
                event.at.astimezone(UTC).isoformat(),
                event.actor_label,
                event.action,
                event.object_type,
                event.object_id,
                event.client_address or "",
                json.dumps(event.detail, ensure_ascii=False, sort_keys=True),
            )
        ]


class _Line:
    """csv.writer writes to a file; this one hands each line back to be streamed."""

    def write(self, line: str) -> str:
        return line


@staff_required
@needs(Role.AUDIT)
@require_GET
def audit_export(request: HttpRequest) -> HttpResponseBase:
    """The events the audit log's filters select, oldest first, as CSV (UTC times, the detail as
    JSON) for an auditor. Refused filters export nothing: the log page shows why."""
    form = AuditFilterForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        return _page(request, form, status=400)
    events = form.filter(AuditEvent.objects.all()) if form.is_bound else AuditEvent.objects.all()
    filters = form.used_filters() if form.is_bound else {}
    recorded = audit.record(
        action="audit.export",
        obj=("audit", "log"),
        request=request,
        filters=filters,
        events=events.count(),
    )
    # The export's own event is in the log from now on, but not in the file it describes.
    selected = events.exclude(pk=recorded.pk).order_by("at", "id").iterator(chunk_size=EXPORT_CHUNK)
    writer = csv.writer(_Line())
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in _rows(selected)), content_type="text/csv; charset=utf-8"
    )
    stamp = timezone.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    return response
