"""Dashboard: what needs a staff member's attention, in counts."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from adminconsole.access import open_to_all_staff, staff_required
from adminconsole.forms.operations import PERIODS
from hisp.models import Address, Certificate, Delivery, Domain, Message, TrustBundle
from hisp.services import outside_revocation

EXPIRY_WINDOW = timedelta(days=30)
BUNDLE_ERRORS = (
    TrustBundle.Result.FETCH_ERROR,
    TrustBundle.Result.FORMAT_ERROR,
    TrustBundle.Result.SIGNATURE_ERROR,
)


def _address_counts() -> list[tuple[str, str, int]]:
    """(status, label, count) for every address status, zero included."""
    found = {
        row["status"]: row["n"] for row in Address.objects.values("status").annotate(n=Count("id"))
    }
    return [(value, label, found.get(value, 0)) for value, label in Address.Status.choices]


def expiring(certificates: QuerySet[Certificate]) -> QuerySet[Certificate]:
    """Ours and partners' certificates in use that expire within the window (discovered ones
    are the partner's business and are looked up again anyway; a renewed one is replaced
    already). The dashboard counts these and the certificate list's filter shows them."""
    now = timezone.now()
    return certificates.filter(
        revoked_at__isnull=True,
        superseded_by__isnull=True,
        not_after__gte=now,
        not_after__lt=now + EXPIRY_WINDOW,
    ).exclude(source=Certificate.Source.DISCOVERED)


def expiring_certificates() -> QuerySet[Certificate]:
    return expiring(Certificate.objects.all())


def cas_to_roll_over() -> QuerySet[Domain]:
    """Domains whose issuing CA ends within one certificate lifetime: certificates it issues
    already come out shorter than HISP_CERT_VALIDITY, and partners need time to import a
    successor (docs/pki.md, "Replacing a CA")."""
    return (
        Domain.objects.select_related("issuing_ca")
        .filter(issuing_ca__not_after__lt=timezone.now() + settings.HISP_CERT_VALIDITY)
        .order_by("issuing_ca__not_after", "name")
    )


def _message_rows(recent: QuerySet[Message]) -> list[tuple[str, str, int, int]]:
    """(state, label, inbound count, outbound count) for each message state."""
    counted = {
        (row["direction"], row["state"]): row["n"]
        for row in recent.values("direction", "state").annotate(n=Count("id"))
    }
    return [
        (
            value,
            label,
            counted.get((Message.Direction.INBOUND, value), 0),
            counted.get((Message.Direction.OUTBOUND, value), 0),
        )
        for value, label in Message.State.choices
    ]


@staff_required
@open_to_all_staff
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    if not request.staff_roles.any:  # type: ignore[attr-defined]  # set by staff_required
        # Nothing to count for someone with no role yet: the page only says so.
        return render(request, "adminconsole/dashboard.html", {})
    since = timezone.now() - PERIODS["24h"]  # what its links pass on as period=24h
    expiring = expiring_certificates()
    context = {
        "domain_count": Domain.objects.count(),
        "addresses": _address_counts(),
        "message_rows": _message_rows(Message.objects.filter(created_at__gte=since)),
        "deferred_count": Delivery.objects.filter(state=Delivery.State.DEFERRED).count(),
        # Failed is final: only the recent failures are news (deferred and waiting ones are
        # counted whatever their age: they are still in the queue).
        "failed_count": Delivery.objects.filter(
            state=Delivery.State.FAILED, updated_at__gte=since
        ).count(),
        "pending_certificate_count": Delivery.objects.filter(
            state=Delivery.State.PENDING_CERTIFICATE
        ).count(),
        "bundle_errors": TrustBundle.objects.filter(last_result__in=BUNDLE_ERRORS)
        .select_related("domain"),
        "expiring_count": expiring.count(),
        "expiring": expiring.order_by("not_after")[:10],
        "ca_rollovers": cas_to_roll_over()[:10],
        "outside_revocations": outside_revocation.needing_attention(),
    }
    return render(request, "adminconsole/dashboard.html", context)
