"""The user's own settings: notices, security keys, contacts and delegation of the mailboxes
they own."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from hisp.models import Address, AddressGrant
from webmail import access, securitykeys, services
from webmail.decorators import mail_login_required
from webmail.forms import (
    ContactForm,
    DelegateForm,
    NotificationForm,
    PasswordConfirmForm,
    SecurityKeyForm,
)
from webmail.models import Contact, NotificationPreference, WebAuthnDevice


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
        "security_keys": WebAuthnDevice.objects.filter(user_id=request.user.pk),
    })


def _registered(request: HttpRequest, credential: str,
                existing: list[WebAuthnDevice]) -> securitykeys.NewKey:
    try:
        return securitykeys.verify_registration(
            session=request.session, credential=credential, existing=existing)
    except RecursionError:
        # JSON nested thousands deep (in the credential or its clientDataJSON) exhausts the
        # parser's stack: a malformed answer like any other, not a 500.
        raise securitykeys.Refused(securitykeys.Reason.MALFORMED) from None


@mail_login_required
@require_http_methods(["GET", "POST"])
def security_key_add(request: HttpRequest) -> HttpResponse:
    """Name the key, touch it (webauthn.js fills in ``credential``), and it is registered."""
    existing = list(WebAuthnDevice.objects.filter(user_id=request.user.pk))
    form = SecurityKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            key = _registered(request, form.cleaned_data["credential"], existing)
            services.add_security_key(user=request.user, name=form.cleaned_data["name"], key=key,
                                      request=request)
        except securitykeys.Refused as refusal:
            form.add_error(None, str(refusal))
        else:
            messages.success(request, f"Security key “{form.cleaned_data['name']}” added.")
            return redirect("webmail:account")
    # A fresh challenge for every showing of the form: the last one was used up or never sent.
    # The template leaves ``credential`` empty, so a retry asks the key again.
    return render(request, "webmail/security_key_add.html", {
        "form": form,
        "key_options": securitykeys.registration_options(
            session=request.session, user=request.user, existing=existing),
    })


@mail_login_required
@require_http_methods(["GET", "POST"])
def security_key_remove(request: HttpRequest, key_id: int) -> HttpResponse:
    device = access.security_key_for(request.user, key_id)
    form = PasswordConfirmForm(request.POST or None, user=request.user)
    if request.method == "POST":
        if form.is_valid():
            services.remove_security_key(device=device, request=request)
            messages.success(request, f"Security key “{device.name}” removed.")
            return redirect("webmail:account")
        # A wrong password here counts like one at sign-in: a left-open session is not a way
        # to guess it.
        user_login_failed.send(sender=__name__, request=request,
                               credentials={"username": request.user.get_username()})
    return render(request, "webmail/security_key_remove.html", {"form": form, "key": device})


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
    if address.kind == Address.Kind.PATIENT:
        # Sharing is for a practice's mailboxes. From a patient's it would hand their health
        # mail to whoever they name, and its "no such user" answer would let them list the
        # user names of the practice's staff.
        messages.error(request, "Your secure mailbox cannot be shared. If someone should "
                                "read your messages for you, ask your practice.")
        return redirect("webmail:account")
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
