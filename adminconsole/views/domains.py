"""Hosted domains: list, add, and one domain with its CA, certificates, anchors and addresses."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from adminconsole import access
from adminconsole.access import staff_required
from adminconsole.forms.identity import DomainAddForm
from hisp.models import Certificate, Domain
from hisp.services import audit, identity


def _list(request: HttpRequest, form: DomainAddForm, *, status: int = 200) -> HttpResponse:
    domains = Domain.objects.select_related("issuing_ca").annotate(
        address_count=Count("addresses", distinct=True)
    )
    return render(
        request,
        "adminconsole/domain_list.html",
        {"domains": domains, "form": form},
        status=status,
    )


@staff_required
@require_GET
def domain_list(request: HttpRequest) -> HttpResponse:
    return _list(request, DomainAddForm())


@staff_required
@require_POST
def domain_add(request: HttpRequest) -> HttpResponse:
    """Create a provider or patient-portal domain with its CA and domain certificate."""
    form = DomainAddForm(request.POST)
    if form.is_valid():
        try:
            domain = identity.add_domain(
                form.cleaned_data["name"],
                portal=form.cleaned_data["kind"] == Domain.Kind.PATIENT_PORTAL,
                actor=request.user,
                client=audit.client_address(request),
            )
        except identity.IdentityError as exc:
            form.add_error("name", str(exc))
        else:
            messages.success(request, f"{domain.name} added with its CA and certificate.")
            return redirect("adminconsole:domain-detail", pk=domain.pk)
    return _list(request, form, status=400)


@staff_required
@require_GET
def domain_detail(request: HttpRequest, pk: int) -> HttpResponse:
    domain = access.get_domain(pk)
    context = {
        "domain": domain,
        "now": timezone.now(),
        "certificates": Certificate.objects.filter(domain=domain).defer("der"),
        "anchors": domain.anchors.select_related("certificate", "bundle"),
        "bundles": domain.bundles.all(),
        "addresses": domain.addresses.all()[:200],
        "address_count": domain.addresses.count(),
    }
    return render(request, "adminconsole/domain_detail.html", context)
