"""The user's own settings: notices, contacts and delegation of the mailboxes they own."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from hisp.models import AddressGrant
from webmail import access, services
from webmail.decorators import mail_login_required
from webmail.forms import ContactForm, DelegateForm, NotificationForm
from webmail.models import Contact, NotificationPreference


@mail_login_required
@require_http_methods(["GET", "POST"])
def account(request: HttpRequest) -> HttpResponse:
    preference = NotificationPreference.objects.filter(user_id=request.user.pk).first()
    form = NotificationForm(request.POST or None,
                            initial={"enabled": preference.enabled if preference else False})
    if request.method == "POST" and form.is_valid():
        services.set_notifications(user=request.user, enabled=form.cleaned_data["enabled"])
        messages.success(request, "Notification setting saved.")
        return redirect("webmail:account")
    return render(request, "webmail/account.html", {
        "form": form,
        "grants": access.grants(request.user),
        "has_email": bool(getattr(request.user, "email", "")),
    })


@mail_login_required
@require_http_methods(["GET", "POST"])
def contacts(request: HttpRequest) -> HttpResponse:
    form = ContactForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.add_contact(owner=request.user, address=form.cleaned_data["address"],
                             name=form.cleaned_data["name"])
        messages.success(request, "Contact saved.")
        return redirect("webmail:contacts")
    return render(request, "webmail/contacts.html", {
        "form": form, "contacts": Contact.objects.filter(owner_id=request.user.pk),
    })


@mail_login_required
@require_POST
def contact_delete(request: HttpRequest, contact_id: int) -> HttpResponse:
    contact = access.contact_for(request.user, contact_id)
    services.delete_contact(contact=contact)
    messages.success(request, "Contact removed.")
    return redirect("webmail:contacts")


@mail_login_required
@require_http_methods(["GET", "POST"])
def delegates(request: HttpRequest, address_id: int) -> HttpResponse:
    address = access.owned_address_for(request.user, address_id)
    form = DelegateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.cleaned_data["username"]
        if user.pk == request.user.pk:
            form.add_error("username", "You already own this mailbox.")
        else:
            services.grant_delegate(address=address, user=user, role=form.cleaned_data["role"],
                                    request=request)
            messages.success(request, f"{user.get_username()} now has access to {address}.")
            return redirect("webmail:delegates", address.pk)
    return render(request, "webmail/delegates.html", {
        "form": form,
        "mailbox": address,
        "delegations": AddressGrant.objects.filter(address=address)
        .exclude(role=AddressGrant.Role.OWNER).select_related("user"),
    })


@mail_login_required
@require_POST
def delegate_revoke(request: HttpRequest, grant_id: int) -> HttpResponse:
    grant = access.delegate_grant_for(request.user, grant_id)
    services.revoke_delegate(grant=grant, request=request)
    messages.success(request, "Access removed.")
    return redirect("webmail:delegates", grant.address_id)
