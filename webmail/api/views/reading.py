"""Reading and filing received mail: a mailbox's messages in the order they arrived, one message
as JSON, its bytes as a mail client retrieves them, its attachments; read, flag and move.

Who sees what is the webmail's rule (webmail/access.py): a mailbox the caller has an active
grant to, else 404. Every way to a message's content is audited as the webmail audits it
(``message.open``, ``attachment.download``) with ``via="api"``; a GET never marks a message
read, because a program polling a shared mailbox must not change what its people see as new.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from django.db.models import F, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.http import content_disposition_header

from hisp.models import AddressGrant, MailboxEntry
from hisp.pop3.render import rendered
from hisp.services.audit import record
from webmail import access, services
from webmail.api.auth import RFC822, api_view, json_body
from webmail.api.horizon import Busy, settled_horizon
from webmail.api.responses import ApiError, ok
from webmail.content import Attachment, open_message
from webmail.downloads import attachment_or_404, download
from webmail.forms import MoveForm

Box = MailboxEntry.SystemFolder
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
_QUERY = frozenset({"folder", "unread", "after", "limit"})
_PATCHABLE = frozenset({"read", "flagged", "folder"})
_BOOLEAN = {"true": True, "false": False}
_NUMBER = re.compile(r"[0-9]{1,18}")  # ASCII digits only, and within a bigint
# Folders a message can be listed in by name; a user folder is named by its id instead.
# Drafts live apart (webmail.Draft, one per author), never as mailbox entries: listing "drafts"
# would always answer an empty page, as if a program's drafts had gone.
_LISTED = frozenset(Box.values) - {Box.USER, Box.DRAFTS}


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, "bad-field", f"{field}: {message}")


# --- Shapes ------------------------------------------------------------------------------------
def _folder_of(entry: MailboxEntry) -> str:
    """The value ``?folder=`` and PATCH take back: a system folder's name or a user folder's id."""
    if entry.folder == Box.USER and entry.user_folder_id is not None:
        return str(entry.user_folder_id)
    return entry.folder


def _item(entry: MailboxEntry, message_id: str) -> dict[str, Any]:
    """What the entry row holds (no message bytes are read): one line of a list."""
    return {
        "id": entry.pk,
        "message_id": message_id,
        "from": entry.sender,
        # To and Cc together, as the mailbox row keeps them; the message's own To and Cc
        # fields come with the message (GET /entries/<id>).
        "recipients": list(entry.recipients),
        "subject": entry.subject,
        "received_at": entry.received_at.isoformat(),
        "read": entry.read,
        "flagged": entry.flagged,
        "folder": _folder_of(entry),
        "has_attachments": entry.has_attachments,
    }


def _attachment_item(
    request: HttpRequest, entry: MailboxEntry, found: Attachment
) -> dict[str, Any]:
    url = reverse("api:attachment", args=[entry.pk, found.index])
    return {"index": found.index, "filename": found.filename, "content_type": found.content_type,
            "size": found.size, "url": request.build_absolute_uri(url)}


def _message(request: HttpRequest, entry: MailboxEntry) -> dict[str, Any]:
    """One message in full: the row, who signed it, its text and its attachments."""
    message = entry.message
    opened = open_message(message)
    return {
        **_item(entry, message.message_id),
        "to": opened.headers.get("To", ""),
        "cc": opened.headers.get("Cc", ""),
        "date": opened.headers.get("Date", ""),
        "signer": message.signer or None,  # None: nobody's signature was verified
        "signer_organisation": message.signer_organisation or None,
        "text": opened.text,
        "attachments": [_attachment_item(request, entry, a) for a in opened.attachments],
    }


# --- The list ----------------------------------------------------------------------------------
def _number(request: HttpRequest, field: str) -> int | None:
    value = request.GET.get(field)
    if value is None:
        return None
    if not _NUMBER.fullmatch(value):
        raise _bad(field, "must be a whole number")
    return int(value)


def _limit(request: HttpRequest) -> int:
    limit = _number(request, "limit")
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise _bad("limit", f"must be from 1 to {MAX_LIMIT}")
    return limit


def _in_folder(
    entries: QuerySet[MailboxEntry], request: HttpRequest, grant: AddressGrant
) -> QuerySet[MailboxEntry]:
    value = request.GET.get("folder", Box.INBOX)
    if value in _LISTED:
        return entries.filter(folder=value)
    if _NUMBER.fullmatch(value):
        try:
            folder = access.folder_for(request.user, int(value))
        except Http404:
            folder = None
        if folder is not None and folder.address_id == grant.address_id:
            return entries.filter(folder=Box.USER, user_folder=folder)
    raise _bad("folder", f"one of {', '.join(sorted(_LISTED))}, or the id of a folder of "
                         "this mailbox")


def _selected(request: HttpRequest, grant: AddressGrant) -> QuerySet[MailboxEntry]:
    unknown = set(request.GET) - _QUERY
    if unknown:
        raise _bad(sorted(unknown)[0], f"unknown parameter; use {', '.join(sorted(_QUERY))}")
    # ?folder=inbox&folder=trash: Django reads the last, a proxy or log filter may check the
    # first; one request must not mean two things.
    repeated = sorted(name for name, values in request.GET.lists() if len(values) > 1)
    if repeated:
        raise _bad(repeated[0], "given more than once")
    entries = _in_folder(MailboxEntry.objects.filter(address_id=grant.address_id), request, grant)
    unread = request.GET.get("unread")
    if unread is not None:
        if unread not in _BOOLEAN:
            raise _bad("unread", "must be true or false")
        entries = entries.filter(read=not _BOOLEAN[unread])
    after = _number(request, "after")
    if after is not None:
        entries = entries.filter(pk__gt=after)
    return entries


def _next_url(request: HttpRequest, last: MailboxEntry) -> str:
    query = {name: value for name, value in request.GET.items() if name != "after"}
    return request.build_absolute_uri(f"{request.path}?{urlencode({**query, 'after': last.pk})}")


@api_view("GET")
def entries(request: HttpRequest, mailbox_id: int) -> HttpResponse:
    """A mailbox's messages oldest first by entry id, so that ``after=<the last id seen>``
    asks "what is new since": up to the horizon (webmail/api/horizon.py) ids only grow, and no
    lower one can still appear. A message moved into the folder later keeps its older id and is
    not seen by such a poll; the webmail shows moves, the API new arrivals."""
    # By id, as the mailbox list gives it: an address in the path would be in every access log
    # line, and a patient's portal address names the patient.
    grant = access.grant_for(request.user, mailbox_id)
    limit = _limit(request)
    selected = _selected(request, grant)
    try:
        horizon = settled_horizon()
    except Busy:
        raise ApiError(503, "busy", "the mailbox is being written to; ask again shortly",
                       Retry_After="5") from None
    if horizon is not None:
        selected = selected.filter(pk__lte=horizon)
    rows = list(
        selected
        .annotate(message_header_id=F("message__message_id"))
        .defer("body_text", "snippet")  # read by search and the webmail's list, not here
        .order_by("pk")[: limit + 1]
    )
    page = rows[:limit]
    return ok({
        "messages": [_item(entry, entry.message_header_id) for entry in page],
        "next": _next_url(request, page[-1]) if len(rows) > limit else None,
    })


# --- One message -------------------------------------------------------------------------------
def _changes(body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - _PATCHABLE
    if unknown:
        raise _bad(sorted(unknown)[0], f"cannot be changed; send {', '.join(sorted(_PATCHABLE))}")
    if not body:
        raise _bad("body", f"nothing to change; send {', '.join(sorted(_PATCHABLE))}")
    for field in ("read", "flagged"):
        if field in body and not isinstance(body[field], bool):
            raise _bad(field, "must be true or false")
    return body


def _move_target(entry: MailboxEntry, value: Any) -> MoveForm:
    """The webmail's move form decides where a message may go (inbox, archive, trash, sent,
    a folder of its own mailbox); the API names a user folder by its bare id."""
    is_id = isinstance(value, int) and not isinstance(value, bool)
    if is_id or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        value = f"folder:{value}"
    form = MoveForm({"target": value if isinstance(value, str) else ""}, address=entry.address)
    if not form.is_valid():
        raise _bad("folder", "inbox, archive, trash, sent, or the id of a folder of this mailbox")
    return form


def _move(request: HttpRequest, entry: MailboxEntry, form: MoveForm) -> MailboxEntry:
    """The entry where it now is: the one moved, or the copy it merged into."""
    target, user_folder = form.cleaned_data["target"]
    if (target, user_folder) == (entry.folder, entry.user_folder):
        return entry
    try:
        services.move_entry(entry=entry, folder=target, user_folder=user_folder, request=request)
    except services.FolderGone:
        raise ApiError(409, "folder-gone", "the folder was deleted meanwhile; nothing was moved")
    return _remaining(entry)


def _remaining(moved: MailboxEntry) -> MailboxEntry:
    # A message sent to oneself is in Sent and in the Inbox: moving one copy onto the other
    # merges them and deletes the moved row, whose id the program must not be given.
    if MailboxEntry.objects.filter(pk=moved.pk).exists():
        return moved
    kept = MailboxEntry.objects.filter(
        address_id=moved.address_id, message_id=moved.message_id, folder=moved.folder,
        user_folder=moved.user_folder,
    ).select_related("message").first()
    return kept or moved


def _patch(request: HttpRequest, entry_id: int) -> HttpResponse:
    entry = access.entry_for(request.user, entry_id, write=True)
    changes = _changes(json_body(request))
    # Checked before anything changes: a bad folder leaves read and flagged as they were too.
    form = _move_target(entry, changes["folder"]) if "folder" in changes else None
    if "read" in changes and changes["read"] != entry.read:
        services.set_read(entry=entry, read=changes["read"], request=request)
    if "flagged" in changes and changes["flagged"] != entry.flagged:
        services.set_flag(entry=entry, flagged=changes["flagged"], request=request)
    if form is not None:
        entry = _move(request, entry, form)
    # The row, not the message: answering with its text would be an open nobody audited.
    return ok(_item(entry, entry.message.message_id))


@api_view("GET", "PATCH")
def entry(request: HttpRequest, entry_id: int) -> HttpResponse:
    if request.method == "PATCH":
        return _patch(request, entry_id)
    found = access.entry_for(request.user, entry_id)
    services.open_entry(entry=found, request=request, mark_read=False)
    return ok(_message(request, found))


@api_view("GET")
def entry_rfc822(request: HttpRequest, entry_id: int) -> HttpResponse:
    """The message as POP3 retrieves it: Return-Path, Received, our Authentication-Results and
    the verified inner message (hisp/pop3/render.py)."""
    found = access.entry_for(request.user, entry_id)
    services.open_entry(entry=found, request=request, mark_read=False)
    response = HttpResponse(rendered(found.message), content_type=RFC822)
    response["Content-Disposition"] = content_disposition_header(True, f"message-{found.pk}.eml")
    response["X-Content-Type-Options"] = "nosniff"
    return response


@api_view("GET")
def attachment(request: HttpRequest, entry_id: int, index: int) -> HttpResponse:
    found = access.entry_for(request.user, entry_id)
    part = attachment_or_404(found, index)
    record(action="attachment.download", obj=found.message, request=request, part=index)
    return download(part.data, filename=part.filename, content_type=part.content_type)

