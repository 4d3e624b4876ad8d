"""Compose, reply, reply-all and forward; recipient autocomplete, per-recipient certificate
check, subject PHI warning and draft autosave (htmx fragments of the compose page)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hisp.mailtext import printable
from hisp.models import Address, AddressGrant, MailboxEntry
from hisp.services.audit import client_address
from hisp.services.compose import size_text
from webmail import access, services
from webmail.certcheck import check_recipients
from webmail.content import open_message
from webmail.decorators import mail_login_required
from webmail.forms import (
    ComposeForm,
    DraftForm,
    _about,
    attachment_allowance,
    id_from,
    parse_recipients,
)
from webmail.models import Contact, Draft
from webmail.navigation import sidebar
from webmail.phi import phi_reasons
from webmail.sending import SubmissionError, send
from webmail.uploads import declared_length

Box = MailboxEntry.SystemFolder


def _sendable(user: Any) -> list[Address]:
    return list(
        Address.objects.filter(
            grants__user_id=user.pk,
            grants__role__in=[AddressGrant.Role.OWNER, AddressGrant.Role.READ_SEND],
            status=Address.Status.ACTIVE,
        ).order_by("address")
    )


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in text.splitlines())


def _draft_initial(draft: Draft) -> dict[str, Any]:
    return {
        "sender": draft.address_id, "to": draft.to, "cc": draft.cc, "subject": draft.subject,
        "body": draft.body, "delivery_notification": draft.delivery_notification,
        "draft": draft.pk, "draft_version": draft.updated_at.isoformat(),
        "forward_of": draft.forward_of_id,
    }


def _entry_unless_gone(user: Any, entry_id: int) -> MailboxEntry | None:
    """The message a compose page answers or forwards, or None once it is gone (deleted
    forever, in another window or by a colleague sharing the mailbox): the page's text must
    survive that, only the quote or the forwarded attachments cannot. Another user's message
    is still 404."""
    try:
        return access.entry_for(user, entry_id)
    except Http404:
        if MailboxEntry.objects.filter(pk=entry_id).exists():
            raise
        return None


FORWARD_GONE = ("The message you were forwarding has been deleted, so its attachments can no "
                "longer be sent with yours. Your text is kept below: send it without them, or "
                "ask the sender for the attachments again.")


def _prefill(request: HttpRequest, sendable: list[Address]) -> dict[str, Any]:
    """Initial values from ?draft=, ?reply=&mode=reply|all|forward, ?to= and ?from=."""
    initial: dict[str, Any] = {"delivery_notification": True}
    if sendable:
        initial["sender"] = sendable[0].pk
    wanted = id_from(request.GET.get("from"))
    if wanted is not None and any(a.pk == wanted for a in sendable):
        initial["sender"] = wanted
    if request.GET.get("to"):
        initial["to"] = request.GET["to"][:500]
    draft_id = id_from(request.GET.get("draft"))
    if draft_id is not None:
        draft = _own_draft(request.user, draft_id)
        if draft is not None:
            return {**initial, **_draft_initial(draft)}
        messages.error(request, DRAFT_ALREADY_GONE)
        return initial
    reply_id = id_from(request.GET.get("reply"))
    entry = _entry_unless_gone(request.user, reply_id) if reply_id is not None else None
    if reply_id is not None and entry is None:
        # Deleted forever between opening it and pressing Reply (another window, a colleague).
        messages.error(request, "The message you wanted to answer has been deleted, so it "
                                "cannot be quoted. You can still write a new message below.")
    if entry is not None:
        mode = request.GET.get("mode", "reply")
        opened = open_message(entry.message)
        subject = entry.subject or opened.headers.get("Subject", "")
        own = entry.address.address
        if entry.address in sendable:
            initial["sender"] = entry.address.pk
        header_from = opened.headers.get("From", entry.sender)
        # In the site's time zone, as the message page shows it (stored times are UTC).
        quoted = (f"\n\nOn {timezone.localtime(entry.received_at):%Y-%m-%d %H:%M}, "
                  f"{header_from} wrote:\n"
                  + _quote(opened.text))
        if mode == "forward":
            initial["subject"] = subject if subject.lower().startswith("fwd:") else f"Fwd: {subject}"
            initial["body"] = ("\n\n---------- Forwarded message ----------\n"
                               f"From: {header_from}\nSubject: {subject}\n\n{opened.text}")
            initial["forward_of"] = entry.pk
        else:
            initial["subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
            initial["body"] = quoted
            try:
                reply_to = parse_recipients(header_from)
            except ValidationError:
                reply_to = []
            if entry.folder == Box.SENT:
                reply_to = list(entry.recipients)
            initial["to"] = ", ".join(reply_to)
            if mode == "all":
                others = []
                for field in ("To", "Cc"):
                    try:
                        others += parse_recipients(opened.headers.get(field, ""))
                    except ValidationError:
                        continue
                # Compared ignoring case: a sender may write our address in any case, and
                # hosted addresses are found ignoring it, so "Alice@" is still this mailbox.
                left_out = {own.lower(), *(a.lower() for a in reply_to)}
                cc: dict[str, str] = {}
                for a in others:
                    if a.lower() not in left_out:
                        cc.setdefault(a.lower(), a)
                initial["cc"] = ", ".join(cc.values())
    return initial


@mail_login_required
@require_http_methods(["GET", "POST"])
@sensitive_post_parameters()  # PHI: recipients, subject, body
def compose(request: HttpRequest) -> HttpResponse:
    sendable = _sendable(request.user)
    if not sendable:
        messages.error(request, "You have no mailbox you may send from.")
        return redirect("webmail:inbox")
    if request.method == "POST":
        form = ComposeForm(request.POST, request.FILES, user=request.user)
        if form.is_valid():
            data = form.cleaned_data
            forward_of = None
            if data.get("forward_of"):
                forward_of = _entry_unless_gone(request.user, data["forward_of"])
                if forward_of is None:
                    return _compose_page(request, _without_forward(request, form), sendable)
            try:
                message = send(
                    address=data["sender"], user=request.user, to=data["to"], cc=data["cc"],
                    subject=data["subject"], body=data["body"], uploads=data["attachments"],
                    forward_of=forward_of, delivery_notification=data["delivery_notification"],
                    client=client_address(request),
                )
            except SubmissionError as exc:
                form.add_error(None, f"The message could not be sent: {exc}")
                return _compose_page(request, form, sendable)
            if data.get("draft"):
                services.discard_sent_draft(author=request.user, draft_id=data["draft"],
                                            seen=data.get("draft_version"))
            messages.success(request, "Your message is on its way. Its progress is shown in Sent.")
            sent_entry = MailboxEntry.objects.filter(
                message=message, address=data["sender"], folder=Box.SENT
            ).first()
            if sent_entry is not None:
                return redirect("webmail:message-detail", sent_entry.pk)
            return redirect("webmail:folder", data["sender"].pk, Box.SENT)
    else:
        form = ComposeForm(initial=_prefill(request, sendable), user=request.user)
    return _compose_page(request, form, sendable)


def _without_forward(request: HttpRequest, form: ComposeForm) -> ComposeForm:
    """The posted form again, forwarding nothing, with the reason why: sent again as it then
    stands, it goes without the attachments that no longer exist."""
    posted = request.POST.copy()
    posted["forward_of"] = ""
    again = ComposeForm(posted, request.FILES, user=request.user)
    again.is_valid()
    again.add_error(None, FORWARD_GONE)
    return again


@mail_login_required
def compose_too_large(request: HttpRequest) -> HttpResponse:
    """The answer to a compose post longer than any message we send (webmail.uploads refuses
    it before the body is read, so nothing the clinician typed reached us with it). The page
    comes back with their latest autosaved draft, which is all of their text we have."""
    sendable = _sendable(request.user)
    if not sendable:
        messages.error(request, "You have no mailbox you may send from.")
        return redirect("webmail:inbox")
    # The page a draft was resumed from posts to ?draft=<id>; otherwise autosave made one
    # that only the form's hidden field names: the author's newest is that one.
    drafts = Draft.objects.filter(author_id=request.user.pk, address__in=sendable)
    draft_id = id_from(request.GET.get("draft"))
    draft = (drafts.filter(pk=draft_id).first() if draft_id is not None else None) or drafts.first()
    initial = _draft_initial(draft) if draft is not None else _prefill(request, sendable)
    form = ComposeForm(initial=initial, user=request.user)
    allowance = attachment_allowance()
    # An unbound form has no cleaned_data for add_error to prune: the error is put in directly.
    room = (f"secure messages can carry about {_about(allowance)} of attachments. Send them in "
            "several messages, or share a smaller file." if allowance else
            "the size limit for secure messages leaves no room for attachments.")
    form.errors["attachments"] = form.error_class(
        [f"The files you chose, about {size_text(declared_length(request))} in all, are too "
         f"large to send: {room} Nothing of them was received; choose the files to send again."],
        renderer=form.renderer, field_id=form["attachments"].auto_id,
    )
    return _compose_page(request, form, sendable, restored=draft, refused=True, status=413)


def _compose_page(request: HttpRequest, form: ComposeForm, sendable: list[Address], *,
                  restored: Draft | None = None, refused: bool = False,
                  status: int = 200) -> HttpResponse:
    address = sendable[0]
    sender_id = id_from(form["sender"].value())
    if sender_id is not None:
        address = next((a for a in sendable if a.pk == sender_id), address)
    allowance = attachment_allowance()
    forward_id = id_from(form["forward_of"].value())
    forwarded = None
    if forward_id is not None:
        forwarded_entry = _entry_unless_gone(request.user, forward_id)
        if forwarded_entry is not None:
            forwarded = open_message(forwarded_entry.message).attachments
    return render(request, "webmail/compose.html", {
        **sidebar(user=request.user, address=address, current="compose"),
        "form": form,
        "forwarded_attachments": forwarded,
        "phi_reasons": phi_reasons(str(form["subject"].value() or "")),
        "attachment_allowance": allowance,
        "attachment_allowance_text": _about(allowance),
        "refused": refused,
        "restored": restored,
    }, status=status)


@mail_login_required
@require_GET
def recipient_suggestions(request: HttpRequest) -> HttpResponse:
    """Autocomplete for a comma-separated recipients field. Each option's value is the whole
    field with the last, partly typed address completed, so a plain <datalist> does the rest."""
    field = request.GET.get("field", "to")
    field = field if field in ("to", "cc") else "to"
    text = printable(request.GET.get(field, ""))[:2000]  # a NUL would fail the queries
    head, _, token = text.rpartition(",")
    token = token.strip().lower()
    prefix = (head.strip() + ", ") if head.strip() else ""
    found: dict[str, str] = {}
    if len(token) >= 2:
        for contact in Contact.objects.filter(owner_id=request.user.pk).filter(
            Q(address__icontains=token) | Q(name__icontains=token)
        )[:8]:
            found.setdefault(contact.address, contact.name)
        # The hosted directory offers clinicians and organisations only: that someone holds a
        # patient address here (and under what name) is itself health information, so patient
        # addresses are suggested only from the user's own contacts and correspondence.
        directory = Address.objects.filter(status=Address.Status.ACTIVE).exclude(
            kind=Address.Kind.PATIENT
        )
        for hosted in directory.filter(
            Q(address__icontains=token) | Q(display_name__icontains=token)
        )[:8]:
            found.setdefault(hosted.address, hosted.display_name)
        mailboxes = access.grants(request.user).values("address_id")
        correspondents = (
            MailboxEntry.objects.filter(address_id__in=mailboxes, sender__icontains=token)
            .order_by("-received_at").values_list("sender", flat=True)[:50]
        )
        for sender in correspondents:
            try:
                for parsed in parse_recipients(sender):
                    found.setdefault(parsed, "")
            except ValidationError:
                continue
            if len(found) >= 15:
                break
    options = [(prefix + address, name) for address, name in list(found.items())[:15]]
    return render(request, "webmail/compose.html#suggestions",
                  {"options": options, "field": field})


@mail_login_required
@require_POST
@sensitive_post_parameters()  # PHI: recipients, subject, body
def certificate_check(request: HttpRequest) -> HttpResponse:
    sendable = _sendable(request.user)
    sender_id = request.POST.get("sender", "")
    address = next((a for a in sendable if str(a.pk) == sender_id), None)
    rows: list[Any] = []
    invalid = False
    if address is not None:
        try:
            recipients = parse_recipients(request.POST.get("to", "") + "," + request.POST.get("cc", ""))
        except ValidationError:
            recipients, invalid = [], True
        rows = check_recipients(recipients[:50], sender=address, at=timezone.now())
    return render(request, "webmail/compose.html#certificates", {"checks": rows, "invalid": invalid})


@mail_login_required
@require_POST
@sensitive_post_parameters()  # PHI: recipients, subject, body
def subject_check(request: HttpRequest) -> HttpResponse:
    return render(request, "webmail/compose.html#phi",
                  {"phi_reasons": phi_reasons(request.POST.get("subject", "")[:998])})


DRAFT_ALREADY_GONE = ("That draft has already been sent or discarded (perhaps in another "
                      "window).")
DRAFT_GONE = ("The draft this page was saving was sent or discarded meanwhile (perhaps in "
              "another window): what you typed here is saved as a new draft.")
DRAFT_SPLIT = ("This draft was also changed in another window: what you typed here is saved "
               "as a separate draft, so neither text is lost.")


def _draft_status(request: HttpRequest, *, status: int = 200, **context: Any) -> HttpResponse:
    """The autosave answer. mail.js shows it even with an error status, so "Draft saved at"
    never stays on screen after a save that failed."""
    return render(request, "webmail/compose.html#draft-status", context, status=status)


def _own_draft(user: Any, draft_id: int) -> Draft | None:
    """The author's draft, or None if it no longer exists (sent or discarded in another
    window); another user's draft, or one of a mailbox no longer open to the user, is 404."""
    try:
        return access.draft_for(user, draft_id)
    except Http404:
        if Draft.objects.filter(pk=draft_id).exists():
            raise
        return None


@mail_login_required
@require_POST
@sensitive_post_parameters()  # PHI: recipients, subject, body
def draft_save(request: HttpRequest) -> HttpResponse:
    form = DraftForm(request.POST)
    if not form.is_valid():
        return _draft_status(request, error="Draft not saved.")
    data = form.cleaned_data
    try:
        # Checked on every save: a delegation revoked or made read-only while this page was
        # open stops its autosave at once, and the page says so.
        address = access.sending_address_for(request.user, data["sender"])
        draft = _own_draft(request.user, data["draft"]) if data.get("draft") else None
        forward_of = _entry_unless_gone(request.user, data["forward_of"]) if data.get("forward_of") else None
    except (Http404, PermissionDenied) as refusal:
        return _draft_status(
            request, status=404 if isinstance(refusal, Http404) else 403,
            error="Draft not saved: you can no longer send from this mailbox. Copy your text "
                  "before you leave this page.",
        )
    if draft is not None and data.get("draft_version"):
        draft.updated_at = data["draft_version"]  # the version this page last saw
    saved, split = services.save_draft(
        author=request.user, address=address, draft=draft, to=data["to"], cc=data["cc"],
        subject=data["subject"], body=data["body"],
        delivery_notification=data["delivery_notification"], forward_of=forward_of,
    )
    notices = []
    if data.get("draft") and draft is None:
        notices.append(DRAFT_GONE)
    elif split:
        notices.append(DRAFT_SPLIT)
    if data.get("forward_of") and forward_of is None:
        notices.append(FORWARD_GONE)
    return _draft_status(request, draft=saved, notices=notices)


@mail_login_required
@require_POST
def draft_delete(request: HttpRequest, draft_id: int) -> HttpResponse:
    draft = _own_draft(request.user, draft_id)
    if draft is None:
        messages.warning(request, DRAFT_ALREADY_GONE)
        return redirect("webmail:inbox")
    address_id = draft.address_id
    services.delete_draft(draft=draft)
    messages.success(request, "Draft discarded.")
    return redirect("webmail:folder", address_id, Box.DRAFTS)
