"""Organisations and providers: identity proofing, lifecycle, mailbox access, password reset."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Q
from django.forms import HiddenInput
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from adminconsole import access, impact, invitations, services
from adminconsole.access import needs, staff_required
from adminconsole.forms.confirm import ReasonConfirmForm
from adminconsole.forms.identity import (
    CONFIRMED_TRANSITIONS,
    AddressAddForm,
    AddressFilterForm,
    GrantForm,
    ProofingForm,
    StatusForm,
)
from adminconsole.roles import Role
from adminconsole.views.common import audit_search, confirm_page, paginate, query_without_page
from hisp.models import Address, AddressGrant
from hisp.services import identity


@staff_required
@require_GET
def address_list(request: HttpRequest) -> HttpResponse:
    return _list(request, AddressAddForm())


def _list(request: HttpRequest, add_form: AddressAddForm, *, status: int = 200) -> HttpResponse:
    form = AddressFilterForm(request.GET or None)
    addresses = Address.objects.select_related("domain")
    if form.is_valid():
        data = form.cleaned_data
        if data["status"]:
            addresses = addresses.filter(status=data["status"])
        if data["kind"]:
            addresses = addresses.filter(kind=data["kind"])
        if data["domain"]:
            addresses = addresses.filter(domain=data["domain"])
        if data["q"]:
            addresses = addresses.filter(
                Q(address__icontains=data["q"]) | Q(display_name__icontains=data["q"])
            )
    page = paginate(request, addresses)
    audit_search(request, form, page, action="address.console-search", listing="addresses")
    return render(
        request,
        "adminconsole/address_list.html",
        {
            "form": form,
            "add_form": add_form,
            "page": page,
            "query": query_without_page(request),
        },
        status=status,
    )


@staff_required
@needs(Role.REGISTRATION)
@require_POST
def address_add(request: HttpRequest) -> HttpResponse:
    """A new address starts pending: proofing and activation follow on its page."""
    form = AddressAddForm(request.POST)
    if form.is_valid():
        try:
            created = services.add_address_for_proofing(request=request, **form.cleaned_data)
        except identity.IdentityError as exc:
            form.add_error(None, str(exc))
        else:
            if created.reset is None:
                messages.success(request, f"{created.address.address} added, pending proofing.")
                return redirect("adminconsole:address-detail", pk=created.address.pk)
            response = render(
                request,
                "adminconsole/password_reset_done.html",
                {"address": created.address, "reset": created.reset, "new": True},
            )
            response["Cache-Control"] = "no-store"
            return response
    return _list(request, form, status=400)


def _detail(request: HttpRequest, address: Address, **forms: object) -> HttpResponse:
    context = {
        "address": address,
        "now": timezone.now(),
        "grants": address.grants.select_related("user").order_by("role", "user__username"),
        "records": address.proofing_records.select_related("recorded_by"),
        "certificates": address.certificates.defer("der"),
        "proofing_form": ProofingForm(),
        "status_form": StatusForm(),
        "moves": services.transitions_from(address.status),
        "grant_form": GrantForm(),
        "postmaster": identity.is_postmaster(address.address),
        **invitations.detail_context(address),
        **forms,
    }
    status = 400 if any(getattr(f, "errors", None) for f in forms.values()) else 200
    return render(request, "adminconsole/address_detail.html", context, status=status)


@staff_required
@require_GET
def address_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _detail(request, access.get_address(pk))


@staff_required
@needs(Role.REGISTRATION)
@require_POST
def record_proofing(request: HttpRequest, pk: int) -> HttpResponse:
    address = access.get_address(pk)
    form = ProofingForm(request.POST)
    if not form.is_valid():
        return _detail(request, address, proofing_form=form)
    services.record_proofing(request=request, address=address, **form.cleaned_data)
    messages.success(request, "Proofing recorded.")
    return redirect("adminconsole:address-detail", pk=address.pk)


@staff_required
@needs(Role.REGISTRATION)
@require_POST
def change_status(request: HttpRequest, pk: int) -> HttpResponse:
    address = access.get_address(pk)
    form = StatusForm(request.POST)
    if form.is_valid():
        try:
            services.change_status(request=request, address=address, **form.cleaned_data)
        except services.StaffActionError as exc:
            form.add_error(None, str(exc))
    if not form.is_valid():
        return _status_refused(request, address, form)
    messages.success(request, f"{address.address} is now {address.get_status_display().lower()}.")
    return redirect("adminconsole:address-detail", pk=address.pk)


def _status_refused(request: HttpRequest, address: Address, form: StatusForm) -> HttpResponse:
    """A suspension or disabling that did not happen goes back to its confirmation page (the
    error belongs beside what was being confirmed); a refused activation to the address page."""
    transition = form.data.get("transition")
    if transition in CONFIRMED_TRANSITIONS:
        return _status_page(request, address, transition, form)
    return _detail(request, address, status_form=form)


def _status_page(
    request: HttpRequest, address: Address, transition: str, form: StatusForm
) -> HttpResponse:
    form.fields["transition"].widget = HiddenInput()
    # Shown as required (StatusForm.clean enforces both for these moves).
    form.fields["note"].required = form.fields["confirm"].required = True
    return confirm_page(
        request,
        impact.status_change(address, transition),
        form,
        cancel_url=reverse("adminconsole:address-detail", kwargs={"pk": address.pk}),
        action_url=reverse("adminconsole:address-status", kwargs={"pk": address.pk}),
    )


@staff_required
@needs(Role.REGISTRATION)
@require_GET
def status_confirm(request: HttpRequest, pk: int, transition: str) -> HttpResponse:
    """What suspending or disabling this address does; its form posts to ``change_status``."""
    address = access.get_address(pk)
    if transition not in CONFIRMED_TRANSITIONS:
        raise Http404("no such lifecycle change to confirm")
    return _status_page(request, address, transition, StatusForm(initial={"transition": transition}))


@staff_required
@needs(Role.REGISTRATION)
@require_POST
def grant_access(request: HttpRequest, pk: int) -> HttpResponse:
    address = access.get_address(pk)
    form = GrantForm(request.POST)
    if form.is_valid():
        try:
            services.grant_access(
                request=request,
                address=address,
                user=form.cleaned_data["username"],
                role=form.cleaned_data["role"],
            )
        except services.StaffActionError as exc:
            form.add_error(None, str(exc))
    if not form.is_valid():
        return _detail(request, address, grant_form=form)
    messages.success(request, "Access granted.")
    return redirect("adminconsole:address-detail", pk=address.pk)


def _detail_url(address: Address) -> str:
    return reverse("adminconsole:address-detail", kwargs={"pk": address.pk})


@staff_required
@needs(Role.REGISTRATION)
@require_http_methods(["GET", "POST"])
def revoke_grant(request: HttpRequest, pk: int, grant_pk: int) -> HttpResponse:
    """Revoking a delegate needs a reason (audited) and an explicit confirmation."""
    address = access.get_address(pk)
    grant = get_object_or_404(AddressGrant.objects.select_related("user"), pk=grant_pk, address=address)
    form = ReasonConfirmForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        try:
            services.revoke_access(request=request, grant=grant, reason=form.cleaned_data["reason"])
        except services.StaffActionError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Access for {grant.user.get_username()} revoked.")
            return redirect("adminconsole:address-detail", pk=address.pk)
    return confirm_page(
        request, impact.grant_revocation(grant), form, cancel_url=_detail_url(address)
    )


@staff_required
@needs(Role.REGISTRATION)
@require_http_methods(["GET", "POST"])
def reset_password(request: HttpRequest, pk: int) -> HttpResponse:
    """Resetting the owner's password needs a reason (audited) and an explicit confirmation."""
    address = access.get_address(pk)
    form = ReasonConfirmForm(request.POST if request.method == "POST" else None)
    if not form.is_valid():
        return _reset_page(request, address, form)
    try:
        reset = services.reset_owner_password(
            request=request, address=address, reason=form.cleaned_data["reason"]
        )
    except services.StaffActionError as exc:
        form.add_error(None, str(exc))
        return _reset_page(request, address, form)
    # Rendered once, in this response only: never stored, never put in a message or the URL.
    response = render(
        request, "adminconsole/password_reset_done.html", {"address": address, "reset": reset}
    )
    response["Cache-Control"] = "no-store"
    return response


def _reset_page(request: HttpRequest, address: Address, form: ReasonConfirmForm) -> HttpResponse:
    return confirm_page(
        request, impact.password_reset(address), form, cancel_url=_detail_url(address)
    )
