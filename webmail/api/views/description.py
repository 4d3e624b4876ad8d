"""The mail API's OpenAPI 3.1 description (webmail/api/openapi.json), for integrators' tools.

It describes shapes, not anyone's data, so it is served without credentials and may be cached
for a short while; tests/webmail/api/test_api_openapi.py keeps it true to the views."""

from __future__ import annotations

from pathlib import Path

from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers, patch_cache_control

from webmail.api.responses import error

# Read once: the file ships with the code, and serving its exact bytes keeps it what was tested.
DESCRIPTION = (Path(__file__).resolve().parent.parent / "openapi.json").read_bytes()
MAX_AGE = 5 * 60  # seconds: a deployment's upgrade reaches the tools within minutes


def openapi(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        response = error(405, "method-not-allowed", "use GET", Allow="GET")
        add_never_cache_headers(response)
        return response
    response = HttpResponse(DESCRIPTION, content_type="application/json")
    patch_cache_control(response, public=True, max_age=MAX_AGE)
    return response


def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other path under /api/v1/: the API's JSON 404, not the webmail's page."""
    response = error(404, "not-found", "there is no such object, or it is not yours to see")
    add_never_cache_headers(response)
    return response
