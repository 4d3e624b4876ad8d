"""Trust: anchors per hosted domain, anchor exchange with partner HISPs, trust bundles."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from adminconsole import access, certinfo, impact, services
from adminconsole.access import staff_required
from adminconsole.forms.confirm import ReasonConfirmForm
from adminconsole.forms.trust import (
    AnchorConfirmForm,
    AnchorUploadForm,
    BundleAddForm,
    BundleRefreshForm,
)
from adminconsole.views.common import confirm_page
from hisp.models import Domain, TrustAnchor, TrustBundle
from hisp.services import audit, trust


@staff_required
@require_GET
def anchor_list(request: HttpRequest) -> HttpResponse:
    anchors = TrustAnchor.objects.select_related("certificate", "domain", "bundle").defer(
        "certificate__der"
    ).order_by("domain__name", "certificate__subject")
    return render(
        request,
        "adminconsole/anchor_list.html",
        {
            "anchors": anchors,
            "domains": Domain.objects.select_related("issuing_ca"),
        },
    )


@staff_required
@require_http_methods(["GET", "POST"])
def anchor_import(request: HttpRequest) -> HttpResponse:
    """Step one: upload. A valid upload shows the fingerprint and asks for confirmation."""
    if request.method == "GET":
        return render(request, "adminconsole/anchor_import.html", {"form": AnchorUploadForm()})
    form = AnchorUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return render(request, "adminconsole/anchor_import.html", {"form": form}, status=400)
    der: bytes = form.cleaned_data["certificate"]
    return _confirm_page(
        request,
        der,
        AnchorConfirmForm(
            initial={
                "domain": form.cleaned_data["domain"].pk,
                "certificate_pem": certinfo.load(der).public_bytes(certinfo.PEM).decode("ascii"),
                "incoming": form.cleaned_data["incoming"],
                "outgoing": form.cleaned_data["outgoing"],
            }
        ),
        domain=form.cleaned_data["domain"],
    )


def _confirm_page(
    request: HttpRequest, der: bytes, form: AnchorConfirmForm, *, domain: Domain, status: int = 200
) -> HttpResponse:
    return render(
        request,
        "adminconsole/anchor_confirm.html",
        {"form": form, "info": certinfo.describe_der(der), "domain": domain},
        status=status,
    )


@staff_required
@require_GET
def bundle_detail(request: HttpRequest, pk: int) -> HttpResponse:
    bundle = access.get_bundle(pk)
    signer = certinfo.try_describe_der(bytes(bundle.signer_pin) if bundle.signer_pin else None)
    return render(
        request,
        "adminconsole/bundle_detail.html",
        {
            "bundle": bundle,
            "signer": signer,
            "events": bundle.events.all()[:100],
            "anchors": bundle.anchors.select_related("certificate"),
        },
    )


@staff_required
@require_POST
def anchor_confirm(request: HttpRequest) -> HttpResponse:
    """Step two: save only if the typed fingerprint matches the certificate being saved."""
    form = AnchorConfirmForm(request.POST)
    if not form.is_valid():
        der = form.cleaned_data.get("certificate_pem")
        domain = form.cleaned_data.get("domain")
        if der is None or domain is None:
            # The hidden fields were tampered with: nothing trustworthy to show; start again.
            return render(request, "adminconsole/anchor_import.html",
                          {"form": AnchorUploadForm(), "restart": form.errors}, status=400)
        return _confirm_page(request, der, form, domain=domain, status=400)
    data = form.cleaned_data
    try:
        rows = trust.import_anchors(
            # PEM, not DER: hisp.certificates.load_certificates strips whitespace bytes, which
            # corrupts a DER certificate that happens to end in one.
            certinfo.load(data["certificate_pem"]).public_bytes(certinfo.PEM),
            domain=data["domain"].name,
            incoming=data["incoming"],
            outgoing=data["outgoing"],
            actor=request.user,
            client=audit.client_address(request),
        )
    except trust.TrustError as exc:
        form.add_error(None, str(exc))
        return _confirm_page(request, data["certificate_pem"], form, domain=data["domain"], status=400)
    messages.success(request, f"Anchor imported for {data['domain'].name}.")
    return redirect("adminconsole:certificate-detail", pk=rows[0].certificate_id)


@staff_required
@require_GET
def anchor_export(request: HttpRequest, pk: int) -> HttpResponse:
    """Our CA for one domain, with the fingerprint to read out to the partner by phone
    (``?next=1``: the successor of a CA rollover under way)."""
    domain = access.get_domain(pk)
    successor = bool(request.GET.get("next"))
    try:
        exported = trust.export_anchor(domain.name, successor=successor, actor=request.user,
                                       client=audit.client_address(request))
    except trust.TrustError as exc:
        raise Http404(str(exc))
    if request.GET.get("download"):
        response = HttpResponse(exported.pem, content_type="application/pem-certificate-chain")
        name = f"{domain.name}-{'next-' if successor else ''}anchor.pem"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
    return render(
        request,
        "adminconsole/anchor_export.html",
        {"domain": domain, "exported": exported, "pem": exported.pem.decode("ascii"),
         "successor": successor},
    )


def _bundle_list(request: HttpRequest, form: BundleAddForm, *, status: int = 200) -> HttpResponse:
    bundles = TrustBundle.objects.select_related("domain").defer("uploaded", "signer_pin")
    return render(
        request,
        "adminconsole/bundle_list.html",
        {"bundles": bundles, "form": form},
        status=status,
    )


@staff_required
@require_GET
def bundle_list(request: HttpRequest) -> HttpResponse:
    return _bundle_list(request, BundleAddForm())


@staff_required
@require_POST
def bundle_add(request: HttpRequest) -> HttpResponse:
    form = BundleAddForm(request.POST, request.FILES)
    if form.is_valid():
        data = form.cleaned_data
        try:
            outcome = trust.add_bundle(
                data["url"] or data["upload"],
                domain=data["domain"].name,
                name=data["name"],
                incoming=data["incoming"],
                outgoing=data["outgoing"],
                signer_pin=data["signer"],
                actor=request.user,
                client=audit.client_address(request),
            )
        except trust.TrustError as exc:
            form.add_error(None, f"The bundle was not added: {exc}")
        else:
            messages.success(request, f"Bundle added with {len(outcome.added)} anchor(s).")
            return redirect("adminconsole:bundle-detail", pk=outcome.bundle.pk)
    return _bundle_list(request, form, status=400)


@staff_required
@require_http_methods(["GET", "POST"])
def bundle_refresh(request: HttpRequest, pk: int) -> HttpResponse:
    """Step one (GET): fetch and verify the bundle, and show which anchors it would add and
    remove, changing nothing. Step two (POST): fetch it again and apply it only if it still
    makes exactly the changes shown; otherwise show the new changes instead."""
    bundle = access.get_bundle(pk)
    cancel_url = reverse("adminconsole:bundle-detail", kwargs={"pk": bundle.pk})
    try:
        change = trust.preview_refresh(bundle)
    except trust.TrustError as exc:
        return confirm_page(request, impact.bundle_refresh_failure(bundle, str(exc)),
                            BundleRefreshForm(), cancel_url=cancel_url)
    pending = (change.added_fingerprints, change.removed_fingerprints)
    fresh = BundleRefreshForm(initial=BundleRefreshForm.initial_for(*pending))
    if request.method == "GET":
        return confirm_page(request, impact.bundle_refresh(change, now=timezone.now()), fresh,
                            cancel_url=cancel_url)
    form = BundleRefreshForm(request.POST)
    previewed = form.previewed()
    if previewed != pending:
        messages.error(request, (
            "The bundle changed since it was previewed" if previewed is not None
            else "The confirmation did not say which changes were previewed"
        ) + ": nothing was applied. These are the changes a refresh makes now.")
        form = fresh
    elif form.is_valid() and not change.unchanged:
        try:
            outcome = services.apply_previewed_refresh(
                request=request, change=change, added=pending[0], removed=pending[1]
            )
        except services.RefreshChanged:
            messages.error(request, "The bundle's anchors changed while it was applied: nothing "
                                    "was applied. Look at the refresh again.")
            return redirect("adminconsole:bundle-refresh", pk=bundle.pk)
        messages.success(
            request,
            f"Refreshed: {len(outcome.added)} added, {len(outcome.removed)} removed.",
        )
        return redirect("adminconsole:bundle-detail", pk=bundle.pk)
    return confirm_page(request, impact.bundle_refresh(change, now=timezone.now()), form,
                        cancel_url=cancel_url)


@staff_required
@require_http_methods(["GET", "POST"])
def anchor_remove(request: HttpRequest, pk: int) -> HttpResponse:
    """Stopping trust in a partner needs a reason (audited) and an explicit confirmation."""
    anchor = access.get_anchor(pk)
    form = ReasonConfirmForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        try:
            services.remove_anchor(
                request=request, anchor=anchor, reason=form.cleaned_data["reason"]
            )
        except services.StaffActionError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request, f"{anchor.domain.name} no longer trusts {anchor.certificate.subject}."
            )
            return redirect("adminconsole:anchor-list")
    return confirm_page(
        request,
        impact.anchor_removal(anchor, now=timezone.now()),
        form,
        cancel_url=reverse("adminconsole:anchor-list"),
    )
