"""Mailbox screens: folder lists (keyset-paginated), search, bulk actions, user folders."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hisp.mailtext import printable
from hisp.models import Address, Folder, MailboxEntry
from webmail import access, listing, search, services
from webmail.decorators import mail_login_required
from webmail.forms import FolderForm, MoveForm, id_from, move_refused
from webmail.models import Draft
from webmail.navigation import move_targets, sidebar

Box = MailboxEntry.SystemFolder


@mail_login_required
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    first = access.grants(request.user).first()
    if first is None:
        return render(request, "webmail/no_mailbox.html")
    return redirect("webmail:folder", first.address_id, Box.INBOX)


def _render_list(
    request: HttpRequest, *, address: Address, entries: object, current: str, title: str,
    extra: dict[str, object] | None = None, ordering: tuple[object, ...] = listing.NEWEST_FIRST,
    result: listing.Page | None = None,
) -> HttpResponse:
    if result is None:
        result = listing.page(entries, request.GET.get("cursor"), ordering)  # type: ignore[arg-type]
    summaries = listing.delivery_summaries(result.entries)
    for entry in result.entries:
        entry.delivery_summary = summaries.get(entry.message_id, "")  # type: ignore[attr-defined]
    context = {
        **sidebar(user=request.user, address=address, current=current),
        "title": title,
        "entries": result.entries,
        "next_cursor": result.next_cursor,
        "move_targets": move_targets(address),
        **(extra or {}),
    }
    template = "webmail/message_list.html"
    if request.headers.get("HX-Request") and request.GET.get("cursor"):
        template += "#rows"  # "older messages": only the next rows
    return render(request, template, context)


@mail_login_required
@require_GET
def folder(request: HttpRequest, address_id: int, folder: str) -> HttpResponse:
    address = access.address_for(request.user, address_id)
    if folder == Box.DRAFTS:
        drafts = Draft.objects.filter(address=address, author_id=request.user.pk)
        return render(request, "webmail/drafts.html", {
            **sidebar(user=request.user, address=address, current=Box.DRAFTS),
            "drafts": drafts[:200],
        })
    if folder not in (Box.INBOX, Box.SENT, Box.ARCHIVE, Box.TRASH):
        raise Http404("no such folder")
    entries = MailboxEntry.objects.filter(address=address, folder=folder)
    return _render_list(request, address=address, entries=entries, current=folder,
                        title=Box(folder).label)


@mail_login_required
@require_GET
def user_folder(request: HttpRequest, address_id: int, folder_id: int) -> HttpResponse:
    address = access.address_for(request.user, address_id)
    if not Folder.objects.filter(pk=folder_id).exists():
        return _folder_gone(request, address.pk)
    found = access.folder_for(request.user, folder_id)
    if found.address_id != address.pk:
        raise Http404("no such folder")
    entries = MailboxEntry.objects.filter(address=address, folder=Box.USER, user_folder=found)
    return _render_list(request, address=address, entries=entries, current=f"folder:{found.pk}",
                        title=found.name, extra={"user_folder": found})


@mail_login_required
@require_GET
def search_view(request: HttpRequest, address_id: int) -> HttpResponse:
    address = access.address_for(request.user, address_id)
    # From the address bar: a NUL (%00) would fail the query and the audit event (PostgreSQL).
    query = printable(request.GET.get("q", ""))[:200]
    entries = search.filter_entries(MailboxEntry.objects.filter(address=address), query)
    result = listing.page(entries, request.GET.get("cursor"), search.ordering(entries))
    if query.strip():
        services.record_search(address=address, query=query.strip(),
                               results=len(result.entries), request=request)
    return _render_list(request, address=address, entries=entries, current="search",
                        title=f"Search: {query}" if query else "Search",
                        extra={"query": query, "searching": True}, result=result)


@mail_login_required
@require_POST
def bulk(request: HttpRequest, address_id: int) -> HttpResponse:
    """Archive, delete, mark read/unread or move the ticked messages of one mailbox."""
    address = access.address_for(request.user, address_id, write=True)
    ids = {i for i in map(id_from, request.POST.getlist("entry")) if i is not None}
    chosen = list(
        access.entries(request.user).filter(address=address, pk__in=ids).select_related("message")
    )
    missing = ids - {entry.pk for entry in chosen}
    if MailboxEntry.objects.filter(pk__in=missing).exists():
        raise Http404("no such message")  # another mailbox's: never acted on, nor named
    if missing:
        # Deleted forever since the list was shown (another window, a colleague sharing the
        # mailbox): the rest are still acted on, and the user is told.
        messages.warning(request, f"{_messages(len(missing))} you ticked had already been "
                                  "deleted forever, perhaps in another window; "
                                  "the others were done.")
    action = request.POST.get("action", "")
    if action == "delete" and chosen:
        # Counted before the loop: delete_entry leaves every entry's folder at Trash.
        purged = sum(entry.folder == Box.TRASH for entry in chosen)
        moved = len(chosen) - purged
        if purged:
            messages.success(request, f"Deleted {_messages(purged)} forever.")
        if moved:
            messages.success(request, f"Moved {_messages(moved)} to Trash.")
    for entry in chosen:
        if action == "archive":
            services.move_entry(entry=entry, folder=Box.ARCHIVE, request=request)
        elif action == "delete":
            services.delete_entry(entry=entry, request=request)
        elif action in ("read", "unread"):
            services.set_read(entry=entry, read=action == "read", request=request)
        elif action == "move":
            form = MoveForm(request.POST, address=address)
            if not form.is_valid():
                messages.error(request, move_refused(form))
                break
            target, user_folder = form.cleaned_data["target"]
            try:
                services.move_entry(entry=entry, folder=target, user_folder=user_folder,
                                    request=request)
            except services.FolderGone:
                messages.error(request, move_refused(form))
                break
        else:
            messages.error(request, "Unknown action.")
            break
    return redirect(_back(request, address))


def _messages(count: int) -> str:
    return f"{count} message{'' if count == 1 else 's'}"


def _back(request: HttpRequest, address: Address) -> str:
    back = request.POST.get("back", "")
    if back.startswith("/mail/") and "//" not in back:
        return back
    return f"/mail/a/{address.pk}/inbox/"


@mail_login_required
@require_http_methods(["GET", "POST"])
def empty_trash(request: HttpRequest, address_id: int) -> HttpResponse:
    """Ask first, then delete forever what the Trash held when the question was asked."""
    address = access.address_for(request.user, address_id, write=True)
    if request.method == "POST":
        moment = parse_datetime(request.POST.get("before", ""))
        if moment is None or timezone.is_naive(moment):
            messages.error(request, "Trash was not emptied: open Empty Trash again and confirm.")
        else:
            count = services.empty_trash(address=address, trashed_before=moment, request=request)
            messages.success(request, f"Deleted {_messages(count)} forever.")
        return redirect("webmail:folder", address.pk, Box.TRASH)
    now = timezone.now()
    return render(request, "webmail/empty_trash.html", {
        **sidebar(user=request.user, address=address, current=Box.TRASH),
        "count": services.trash_before(address=address, moment=now).count(),
        "before": now.isoformat(),
    })


@mail_login_required
@require_http_methods(["GET", "POST"])
def folders(request: HttpRequest, address_id: int) -> HttpResponse:
    """Create, rename and delete the user folders of a mailbox."""
    address = access.address_for(request.user, address_id, write=request.method == "POST")
    form = FolderForm(request.POST or None, address=address)
    if request.method == "POST" and form.is_valid():
        services.create_folder(address=address, name=form.cleaned_data["name"], request=request)
        messages.success(request, "Folder created.")
        return redirect("webmail:folders", address.pk)
    return render(request, "webmail/folders.html", {
        **sidebar(user=request.user, address=address, current="folders"),
        "form": form,
        "folders": address.folders.all(),
    })


def _folder_gone(request: HttpRequest, address_id: int | None = None) -> HttpResponse:
    """A folder deleted since the page was shown (another window, a colleague sharing the
    mailbox): its messages went back to the Inbox, which is where the user is taken."""
    messages.warning(request, "That folder has been deleted (perhaps in another window); "
                              "its messages are back in the Inbox.")
    if address_id is None:
        return redirect("webmail:inbox")
    return redirect("webmail:folder", address_id, Box.INBOX)


@mail_login_required
@require_POST
def folder_rename(request: HttpRequest, folder_id: int) -> HttpResponse:
    if not Folder.objects.filter(pk=folder_id).exists():
        return _folder_gone(request)
    found = access.folder_for(request.user, folder_id, write=True)
    form = FolderForm(request.POST, address=found.address, folder=found)
    if form.is_valid():
        services.rename_folder(folder=found, name=form.cleaned_data["name"], request=request)
        messages.success(request, "Folder renamed.")
    else:
        messages.error(request, " ".join(form.errors.get("name", ["Invalid name."])))
    return redirect("webmail:folders", found.address_id)


@mail_login_required
@require_POST
def folder_delete(request: HttpRequest, folder_id: int) -> HttpResponse:
    if not Folder.objects.filter(pk=folder_id).exists():
        return _folder_gone(request)
    found = access.folder_for(request.user, folder_id, write=True)
    services.delete_folder(folder=found, request=request)
    messages.success(request, "Folder deleted; its messages are back in the Inbox.")
    return redirect("webmail:folders", found.address_id)
