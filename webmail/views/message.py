"""Reading a message: trust banner, body, attachments, C-CDA and XDM documents, the delivery
timeline of sent mail, and single-message actions."""

from __future__ import annotations

import re
from typing import Any

from django.contrib import messages
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST

from hisp.models import (
    Address,
    AddressGrant,
    AuditEvent,
    Delivery,
    DeliveryEvent,
    MailboxEntry,
    Message,
)
from hisp.services.audit import record
from webmail import access, services
from webmail.cda import DocumentError, parse_cda
from webmail.content import open_message, safe_filename
from webmail.decorators import mail_login_required
from webmail.downloads import attachment_or_404, download
from webmail.forms import MoveForm, move_refused
from webmail.navigation import move_targets, sidebar
from webmail.reasons import sentence
from webmail.sanitise import clean_html, renderable
from webmail.trustinfo import banner
from webmail.xdm import ArchiveError, documents, read_document

Box = MailboxEntry.SystemFolder
_SECTION = re.compile(r"[0-9]{1,4}")


def _timeline(message: Message) -> list[dict[str, object]]:
    deliveries = message.deliveries.order_by("recipient").prefetch_related(
        Prefetch("events", queryset=DeliveryEvent.objects.order_by("at", "id"))
    )
    timeline = []
    for delivery in deliveries:
        steps = [
            {"state": e.state, "label": Delivery.State(e.state).label if e.state in Delivery.State.values else e.state,
             "at": e.at, "sentence": sentence(e.state, e.detail), "detail": e.detail,
             "failed": e.state == Delivery.State.FAILED}
            for e in delivery.events.all()
        ]
        timeline.append({
            "recipient": delivery.recipient,
            "state": delivery.state,
            "label": delivery.get_state_display(),
            "sentence": sentence(delivery.state, delivery.detail),
            "steps": steps,
        })
    return timeline


def _sent_by(message: Message, address: Address) -> str:
    """Who sent an outbound message from a shared mailbox, when it was not its owner: the
    owner must see which delegate wrote in their name. Read from the submission's audit event
    (its actor), which every path that sends (webmail, SMTP submission) writes."""
    event = (
        AuditEvent.objects.filter(action="message.submitted", object_type="hisp.message",
                                  object_id=str(message.pk), actor__isnull=False)
        .only("actor_id", "actor_label").first()
    )
    if event is None or AddressGrant.objects.filter(
        address=address, user_id=event.actor_id, role=AddressGrant.Role.OWNER
    ).exists():
        return ""
    return event.actor_label


# A page shows at most this much of a plain-text body (about 300 printed pages): a 20 MB body
# sent whole is quick on the server but makes a clinic browser struggle. The rest is one click
# away (text_download).
TEXT_SHOWN_CHARS = 1_000_000

@mail_login_required
@require_GET
def message_detail(request: HttpRequest, entry_id: int) -> HttpResponse:
    entry = access.entry_for(request.user, entry_id)
    # A read-only delegate reads without changing the owner's unread state. Marked before the
    # sidebar is counted, so its unread numbers already leave this message out.
    grant = access.grant_for(request.user, entry.address_id)
    services.open_entry(entry=entry, request=request,
                        mark_read=grant.role != AddressGrant.Role.READ)
    navigation = sidebar(
        user=request.user, address=entry.address,
        current=f"folder:{entry.user_folder_id}" if entry.folder == Box.USER else entry.folder,
    )
    message = entry.message
    opened = open_message(message)
    outbound = message.direction == Message.Direction.OUTBOUND
    return render(request, "webmail/message_detail.html", {
        **navigation,
        "entry": entry,
        "message": message,
        "opened": opened,
        "text": opened.text[:TEXT_SHOWN_CHARS],
        "text_cut": len(opened.text) > TEXT_SHOWN_CHARS,
        "html": clean_html(opened.html) if opened.html and renderable(opened.html) else None,
        "html_withheld": bool(opened.html) and not renderable(opened.html),
        "trust": banner(message),
        "timeline": _timeline(message) if outbound else [],
        "sent_by": _sent_by(message, entry.address) if outbound else "",
        "move_targets": move_targets(entry.address),
    })


@mail_login_required
@require_GET
def text_download(request: HttpRequest, entry_id: int) -> HttpResponse:
    """The whole plain-text body, for one too long to show on the page (TEXT_SHOWN_CHARS)."""
    entry = access.entry_for(request.user, entry_id)
    text = open_message(entry.message).text
    record(action="message.text-download", obj=entry.message, request=request, entry=entry.pk,
           chars=len(text))
    response = HttpResponse(text.encode("utf-8"), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(True, f"message-{entry.pk}.txt")
    return response


@mail_login_required
@require_GET
def attachment_download(request: HttpRequest, entry_id: int, index: int) -> HttpResponse:
    entry = access.entry_for(request.user, entry_id)
    found = attachment_or_404(entry, index)
    record(action="attachment.download", obj=entry.message, request=request, part=index)
    return download(found.data, filename=found.filename, content_type=found.content_type)


def _section_asked(request: HttpRequest) -> int | None:
    """A C-CDA page's ?section=: that section alone, one too long to come with the page."""
    raw = request.GET.get("section")
    if raw is None:
        return None
    if not _SECTION.fullmatch(raw):
        raise Http404("no such section")
    return int(raw)


def _section_detail(section: int | None) -> dict[str, Any]:
    """The audit detail of a one-section view; a whole document's view keeps its old detail."""
    return {} if section is None else {"section": section}


def _read_cda(context: dict[str, object], data: bytes, section: int | None) -> None:
    context["shown_section"] = section
    try:
        context["document"] = parse_cda(data, section=section)
    except DocumentError as exc:
        if exc.code == "no-such-section":
            raise Http404("no such section") from exc
        context["error"] = str(exc)


@mail_login_required
@require_GET
def attachment_view(request: HttpRequest, entry_id: int, index: int) -> HttpResponse:
    """A C-CDA rendered readably (or one of its sections: ?section=), or the document list of
    an IHE XDM package."""
    entry = access.entry_for(request.user, entry_id)
    found = attachment_or_404(entry, index)
    section = None if found.looks_like_xdm else _section_asked(request)
    record(action="attachment.view", obj=entry.message, request=request, part=index,
           **_section_detail(section))
    context: dict[str, object] = {
        **sidebar(user=request.user, address=entry.address, current=entry.folder),
        "entry": entry, "attachment": found, "document_path": request.path,
    }
    if found.looks_like_xdm:
        try:
            context["xdm_documents"] = documents(found.data)
        except ArchiveError as exc:
            context["error"] = str(exc)
        return render(request, "webmail/xdm.html", context)
    _read_cda(context, found.data, section)
    return render(request, "webmail/document.html", context)


@mail_login_required
@require_GET
def xdm_document(request: HttpRequest, entry_id: int, index: int, member: int) -> HttpResponse:
    entry = access.entry_for(request.user, entry_id)
    found = attachment_or_404(entry, index)
    if not found.looks_like_xdm:
        raise Http404("not an XDM package")
    downloading = bool(request.GET.get("download"))
    section = None if downloading else _section_asked(request)
    try:
        document, data = read_document(found.data, member)
    except ArchiveError as exc:
        if exc.code == "no-such-document":
            raise Http404("no such document") from exc
        return render(request, "webmail/document.html", {
            **sidebar(user=request.user, address=entry.address, current=entry.folder),
            "entry": entry, "attachment": found, "error": str(exc),
        }, status=422)
    record(action="attachment.view", obj=entry.message, request=request, part=index, member=member,
           **_section_detail(section))
    filename = safe_filename(document.name, index=member, content_type=document.content_type)
    if downloading or not document.is_xml:
        return download(data, filename=filename, content_type=document.content_type)
    context: dict[str, object] = {
        **sidebar(user=request.user, address=entry.address, current=entry.folder),
        "entry": entry, "attachment": found, "member": document, "document_path": request.path,
    }
    _read_cda(context, data, section)
    return render(request, "webmail/document.html", context)


@mail_login_required
@require_POST
def message_action(request: HttpRequest, entry_id: int) -> HttpResponse:
    entry = access.entry_for(request.user, entry_id, write=True)
    action = request.POST.get("action", "")
    back = redirect("webmail:folder", entry.address_id,
                    entry.folder if entry.folder != Box.USER else Box.INBOX)
    if entry.folder == Box.USER and entry.user_folder_id:
        back = redirect("webmail:user-folder", entry.address_id, entry.user_folder_id)
    if action == "archive":
        services.move_entry(entry=entry, folder=Box.ARCHIVE, request=request)
        messages.success(request, "Archived.")
    elif action == "delete":
        # Read before deleting: delete_entry leaves entry.folder at Trash either way.
        purged = entry.folder == Box.TRASH
        services.delete_entry(entry=entry, request=request)
        messages.success(request, "Deleted forever." if purged else "Moved to Trash.")
    elif action == "unread":
        services.set_read(entry=entry, read=False, request=request)
    elif action in ("flag", "unflag"):
        services.set_flag(entry=entry, flagged=action == "flag", request=request)
        return redirect("webmail:message-detail", entry.pk)
    elif action == "move":
        form = MoveForm(request.POST, address=entry.address)
        if not form.is_valid():
            messages.error(request, move_refused(form))
            return redirect("webmail:message-detail", entry.pk)
        target, user_folder = form.cleaned_data["target"]
        try:
            services.move_entry(entry=entry, folder=target, user_folder=user_folder,
                                request=request)
        except services.FolderGone:
            messages.error(request, move_refused(form))
            return redirect("webmail:message-detail", entry.pk)
        messages.success(request, "Moved.")
    else:
        raise Http404("unknown action")
    return back
