"""How a part of a message leaves the HISP as a file, whichever way it is asked for (the webmail's
attachment and document links, the mail API): always as a download, never rendered in our
origin, never kept by a cache."""

from __future__ import annotations

import re

from django.http import Http404, HttpResponse
from django.utils.http import content_disposition_header

from hisp.models import MailboxEntry
from webmail.content import Attachment, attachment

_SIMPLE_TYPE = re.compile(r"^[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*$")
# Types a browser would render or run in our origin are always served as a plain download.
_ACTIVE_TYPES = {"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml",
                 "application/xml", "application/javascript", "text/javascript"}


def attachment_or_404(entry: MailboxEntry, index: int) -> Attachment:
    found = attachment(entry.message, index)
    if found is None:
        raise Http404("no such attachment")
    return found


def download(data: bytes, *, filename: str, content_type: str) -> HttpResponse:
    if not _SIMPLE_TYPE.match(content_type) or content_type in _ACTIVE_TYPES:
        content_type = "application/octet-stream"
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response
