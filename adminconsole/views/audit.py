"""The audit log, filterable and paginated. Reading it is itself audited."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from adminconsole.access import staff_required
from adminconsole.forms.operations import AuditFilterForm
from adminconsole.views.common import paginate, query_without_page
from hisp.models import AuditEvent
from hisp.services import audit


@staff_required
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
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
    )
