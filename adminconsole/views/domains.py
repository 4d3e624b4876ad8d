"""Hosted domains: list, add, and one domain with its CA, certificates, anchors and addresses."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Case, Count, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from adminconsole import access, impact
from adminconsole.access import needs, staff_required
from adminconsole.forms.confirm import ConfirmForm
from adminconsole.forms.identity import DomainAddForm
from adminconsole.roles import Role
from adminconsole.views.common import confirm_page
from hisp.certificates import display_fingerprint
from hisp.models import Certificate, Domain, Route
from hisp.services import audit, identity
from hisp.services import ca_rollover as ca_rollovers

# A domain has thousands of addresses, a certificate per address and more with each renewal: the
# page shows this many of each, and links to all of them in the address and certificate lists.
CERTIFICATES_SHOWN = 200
ADDRESSES_SHOWN = 200


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
@needs(Role.CERTIFICATES)
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
            if Route.objects.filter(domain=domain.name).exists():
                messages.warning(request, f"The route set for {domain.name} is no longer used: "
                                          "its mail is now delivered here. Delete it on the "
                                          "Routes page.")
            return redirect("adminconsole:domain-detail", pk=domain.pk)
    return _list(request, form, status=400)


@staff_required
@require_GET
def domain_detail(request: HttpRequest, pk: int) -> HttpResponse:
    domain = access.get_domain(pk)
    certificates = Certificate.objects.filter(domain=domain).defer("der")
    context = {
        "domain": domain,
        "now": timezone.now(),
        # The domain's own CA and domain-bound certificates first, then its addresses'.
        "certificates": certificates.order_by(
            Case(When(binding=Certificate.Binding.ADDRESS, then=1), default=0),
            "bound_name", "-not_after",
        )[:CERTIFICATES_SHOWN],
        "certificate_count": certificates.count(),
        "anchors": domain.anchors.select_related("certificate", "bundle"),
        "bundles": domain.bundles.all(),
        "addresses": domain.addresses.all()[:ADDRESSES_SHOWN],
        "address_count": domain.addresses.count(),
        "successor": ca_rollovers.pending(domain.name) if domain.issuing_ca else None,
    }
    return render(request, "adminconsole/domain_detail.html", context)


@staff_required
@needs(Role.CERTIFICATES)
@require_http_methods(["GET", "POST"])
def ca_rollover(request: HttpRequest, pk: int) -> HttpResponse:
    """Replacing the domain's issuing CA, one confirmed step at a time: prepare the successor
    (partners import it), then activate it once they trust it."""
    domain = access.get_domain(pk)
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    preparing = ca_rollovers.pending(domain.name) is None if domain.issuing_ca else True
    step = "prepare" if preparing else "activate"
    if request.method == "POST" and request.GET.get("step") != step:
        # Confirmed on a page showing the other step (another staff member moved the rollover
        # on meanwhile): what was ticked is not what would happen now.
        form.add_error(None, "The rollover changed since this page was shown: nothing was "
                             "done. Check the details below and confirm again.")
    if form.is_valid():
        client = audit.client_address(request)
        try:
            if preparing:
                new = ca_rollovers.prepare(domain.name, actor=request.user, client=client)
                messages.success(
                    request,
                    f"Successor CA prepared ({display_fingerprint(new.fingerprint_sha256)}). "
                    "Give it to partners before activating it.",
                )
            else:
                # Renewing thousands of certificates would outlast the request: queued.
                done = ca_rollovers.activate(domain.name, actor=request.user, client=client,
                                             renew_now=False)
                messages.success(
                    request,
                    f"{', '.join(done.domains)} now issue from the successor CA; "
                    f"{done.pending} certificate(s) are being renewed in the background.",
                )
        except ca_rollovers.RolloverError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("adminconsole:domain-detail", pk=domain.pk)
    return confirm_page(
        request,
        impact.ca_rollover(domain),
        form,
        cancel_url=reverse("adminconsole:domain-detail", kwargs={"pk": domain.pk}),
        action_url=f"{request.path}?step={step}",
    )
