"""The mail API's OpenAPI 3.1 description (webmail/api/openapi.json), for integrators' tools.

It describes shapes, not anyone's data, so it is served without credentials and may be cached
for a short while; tests/webmail/api/test_api_openapi.py keeps it true to the views."""

from __future__ import annotations

from pathlib import Path

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

# Read once: the file ships with the code, and serving its exact bytes keeps it what was tested.
DESCRIPTION = (Path(__file__).resolve().parent.parent / "openapi.json").read_bytes()
MAX_AGE = 5 * 60  # seconds: a deployment's upgrade reaches the tools within minutes


@require_GET
@cache_control(public=True, max_age=MAX_AGE)
def openapi(request: HttpRequest) -> HttpResponse:
    return HttpResponse(DESCRIPTION, content_type="application/json")
