"""A cap on the size of any request body, answered with a page a clinician can act on.

``DATA_UPLOAD_MAX_MEMORY_SIZE`` bounds the form fields only: Django streams files to temporary
disk whatever their size, and the CSRF check parses the body before any view could look at it.
Nothing longer than the largest message we would ever send (HISP_MAX_MESSAGE_BYTES, plus room
for the form fields) is parsed or stored:

- ``UploadLimitMiddleware`` looks at the declared length before anything reads the body and
  answers 413: the compose page again, with the last autosaved draft, for a message being
  written (its text must not be lost with the files), the mail API's JSON error under /api/,
  a plain page for anything else.
- ``BoundedUploadHandler`` stays as the backstop should a body reach the multipart parser
  without the middleware (it raises; Django answers 400).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import Resolver404, resolve
from django.utils.http import url_has_allowed_host_and_scheme

from hisp.services import compose
from webmail.api.responses import error

# A refused body is still read and thrown away, up to this many times the cap: a server that
# answers and closes while the browser is still sending makes it show "connection reset"
# instead of our page, and the page (with what was typed) is lost. Past that, reading on would
# only let a hostile client hold a worker; it gets the same answer, perhaps unseen.
_DRAIN_FACTOR = 4
_CHUNK = 64 * 1024


def max_request_bytes() -> int:
    return int(settings.HISP_MAX_MESSAGE_BYTES) + 1024 * 1024


def declared_length(request: HttpRequest) -> int:
    try:
        return max(int(request.META.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return 0  # as Django reads it: no body


class BoundedUploadHandler(FileUploadHandler):
    def handle_raw_input(
        self, input_data: Any, META: Any, content_length: int, boundary: Any, encoding: Any = None
    ) -> None:
        # Django answers RequestDataTooBig (a SuspiciousOperation) with a 400 page.
        if content_length > max_request_bytes():
            raise RequestDataTooBig("the upload is larger than the largest message we send")

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        return raw_data  # pass every chunk on to the next handler

    def file_complete(self, file_size: int) -> None:
        return None


class UploadLimitMiddleware:
    """Listed after the authentication middleware (the compose answer needs the user) and
    before any view middleware reads the body (the CSRF check does, in process_view). The
    answer only shows pages the user could GET anyway: nothing is parsed, stored or changed."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = declared_length(request)
        if length <= max_request_bytes():
            return self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            # Only for someone signed in: a stranger's body is not worth a worker's time.
            _drain(request, length)
        try:
            match = resolve(request.path_info)
        except Resolver404:
            match = None
        if match is not None and match.view_name == "webmail:compose":
            from webmail.views.compose import compose_too_large

            return compose_too_large(request)
        if request.path_info.startswith("/api/"):
            # A program reads the error's code, not a page (webmail/api/responses.py).
            return error(413, "too-large", f"the request body is larger than the "
                         f"{compose.size_text(max_request_bytes())} this server reads")
        return too_large_page(request)


def _drain(request: HttpRequest, length: int) -> None:
    if length > _DRAIN_FACTOR * max_request_bytes():
        return  # the browser would see the reset all the same: do not read on for nothing
    left = length
    while left > 0:
        chunk = request.read(min(_CHUNK, left))
        if not chunk:
            break
        left -= len(chunk)


def too_large_page(request: HttpRequest) -> HttpResponse:
    back = request.META.get("HTTP_REFERER", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        back = request.path
    return render(request, "webmail/too_large.html", {
        "sent": compose.size_text(declared_length(request)),
        "limit": compose.size_text(int(settings.HISP_MAX_MESSAGE_BYTES)),
        "back": back,
    }, status=413)
