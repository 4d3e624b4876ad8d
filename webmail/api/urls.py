"""The mail API's routes, under /api/v1/ (docs/api.md)."""

from __future__ import annotations

from django.urls import path, re_path

from webmail.api.views import description, mailboxes, reading, sending

app_name = "api"

urlpatterns = [
    path("mailboxes", mailboxes.mailboxes, name="mailboxes"),
    path("mailboxes/<int:mailbox_id>/messages", reading.entries, name="entries"),
    path("entries/<int:entry_id>", reading.entry, name="entry"),
    path("entries/<int:entry_id>/rfc822", reading.entry_rfc822, name="entry-rfc822"),
    path("entries/<int:entry_id>/attachments/<int:index>", reading.attachment, name="attachment"),
    path("messages", sending.send, name="send"),
    path("messages/<int:message_id>", sending.status, name="status"),
    path("openapi.json", description.openapi, name="openapi"),
    # Last: any other path (a trailing slash, a negative index) is the API's JSON 404.
    re_path(r"^(?P<rest>.*)$", description.not_found),
]
