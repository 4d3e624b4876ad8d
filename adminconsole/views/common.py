"""Small helpers shared by the console screens."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from adminconsole.impact import Impact
from hisp.services import audit

PAGE_SIZE = 50


def paginate(request: HttpRequest, items: Any, *, per_page: int = PAGE_SIZE) -> Page:
    # get_page() turns a missing, non-numeric or out-of-range page number into a valid page.
    return Paginator(items, per_page).get_page(request.GET.get("page"))


def query_without_page(request: HttpRequest) -> str:
    """The current filters, for pagination links that keep them."""
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


def confirm_page(
    request: HttpRequest,
    impact: Impact,
    form: forms.Form,
    *,
    cancel_url: str,
    action_url: str = "",
) -> HttpResponse:
    """The page a destructive action shows before it acts: what happens, to what, and the box
    to tick. Shown on GET (200) and again after a POST that did not act (400)."""
    if "confirm" in form.fields and impact.statement:
        form.fields["confirm"].label = impact.statement
        form["confirm"].label = impact.statement  # a validated form has cached its bound field
    return render(
        request,
        "adminconsole/confirm.html",
        {
            "impact": impact,
            "form": form,
            "action_url": action_url or request.path,
            "cancel_url": cancel_url,
        },
        status=400 if request.method == "POST" else 200,
    )


def audit_search(
    request: HttpRequest, form: forms.Form, page: Page, *, action: str, listing: str
) -> bool:
    """Staff searching messages or people is access to them: record who looked for what. The
    plain unfiltered list (or a search whose filters were refused) is not recorded here, so the
    log stays readable; whether a search was recorded is returned."""
    if not form.is_valid():
        return False
    filters = {name: str(value) for name, value in form.cleaned_data.items() if value}
    if not filters:
        return False
    audit.record(
        action=action,
        obj=("console-search", listing),
        request=request,
        filters=filters,
        results=page.paginator.count,
        page=page.number,
    )
    return True


def audit_mail_listing(
    request: HttpRequest, form: forms.Form, page: Page, *, search: str, action: str, listing: str
) -> None:
    """A list of messages or deliveries shows who wrote to whom, which is mail metadata: every
    showing is recorded, as opening one message is. A search is recorded with its filters; the
    plain list (paging through it, or after refused filters) as ``action`` with the ids shown,
    so an auditor can tell who saw a given message's sender and recipients."""
    if audit_search(request, form, page, action=search, listing=listing):
        return
    page.object_list = list(page.object_list)  # read once: the template shows the same rows
    audit.record(
        action=action,
        obj=("console-list", listing),
        request=request,
        results=page.paginator.count,
        page=page.number,
        shown=[row.pk for row in page.object_list],
    )
