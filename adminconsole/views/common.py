"""Small helpers shared by the console screens."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Page, Paginator
from django.http import HttpRequest

PAGE_SIZE = 50


def paginate(request: HttpRequest, items: Any, *, per_page: int = PAGE_SIZE) -> Page:
    # get_page() turns a missing, non-numeric or out-of-range page number into a valid page.
    return Paginator(items, per_page).get_page(request.GET.get("page"))


def query_without_page(request: HttpRequest) -> str:
    """The current filters, for pagination links that keep them."""
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()
