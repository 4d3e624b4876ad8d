"""Project-level views: the site root and a health check."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET


@require_GET
def root(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("webmail:inbox")
    return redirect("webmail:login")


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
