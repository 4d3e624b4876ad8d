"""Organisations and providers: identity proofing, lifecycle, mailbox access, password reset."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from adminconsole import access, services
from adminconsole.access import staff_required
from adminconsole.forms.identity import (
    AddressAddForm,
    AddressFilterForm,
    GrantForm,
    ProofingForm,
    StatusForm,
)
from adminconsole.views.common import paginate, query_without_page
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
        if data["q"]:
            addresses = addresses.filter(
                Q(address__icontains=data["q"]) | Q(display_name__icontains=data["q"])
            )
    return render(
        request,
        "adminconsole/address_list.html",
        {
            "form": form,
            "add_form": add_form,
            "page": paginate(request, addresses),
            "query": query_without_page(request),
        },
        status=status,
    )


@staff_required
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
        "grant_form": GrantForm(),
        **forms,
    }
    status = 400 if any(getattr(f, "errors", None) for f in forms.values()) else 200
    return render(request, "adminconsole/address_detail.html", context, status=status)


@staff_required
@require_GET
def address_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _detail(request, access.get_address(pk))


@staff_required
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
        return _detail(request, address, status_form=form)
    messages.success(request, f"{address.address} is now {address.get_status_display().lower()}.")
    return redirect("adminconsole:address-detail", pk=address.pk)


@staff_required
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


@staff_required
@require_POST
def revoke_grant(request: HttpRequest, pk: int, grant_pk: int) -> HttpResponse:
    address = access.get_address(pk)
    grant = get_object_or_404(AddressGrant.objects.select_related("user"), pk=grant_pk, address=address)
    try:
        services.revoke_access(request=request, grant=grant)
    except services.StaffActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Access for {grant.user.get_username()} revoked.")
    return redirect("adminconsole:address-detail", pk=address.pk)


@staff_required
@require_POST
def reset_password(request: HttpRequest, pk: int) -> HttpResponse:
    address = access.get_address(pk)
    try:
        reset = services.reset_owner_password(request=request, address=address)
    except services.StaffActionError as exc:
        messages.error(request, str(exc))
        return redirect("adminconsole:address-detail", pk=address.pk)
    # Rendered once, in this response only: never stored, never put in a message or the URL.
    response = render(
        request, "adminconsole/password_reset_done.html", {"address": address, "reset": reset}
    )
    response["Cache-Control"] = "no-store"
    return response
