"""Trust: anchors per hosted domain, anchor exchange with partner HISPs, trust bundles."""

from __future__ import annotations

import base64
from dataclasses import replace

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from adminconsole import access, certinfo, impact, services
from adminconsole.access import needs, staff_required
from adminconsole.forms.confirm import ReasonConfirmForm
from adminconsole.forms.trust import (
    CHANGED,
    AnchorConfirmForm,
    AnchorUploadForm,
    BundleAddForm,
    BundleConfirmForm,
    BundleRefreshForm,
    PendingBundle,
)
from adminconsole.roles import Role
from adminconsole.views.common import confirm_page, paginate, query_without_page
from hisp.models import Domain, TrustAnchor, TrustBundle
from hisp.services import audit, trust

# Every hosted domain trusting a community bundle of a few hundred anchors makes thousands.
ANCHORS_PER_PAGE = 100


@staff_required
@require_GET
def anchor_list(request: HttpRequest) -> HttpResponse:
    anchors = TrustAnchor.objects.select_related("certificate", "domain", "bundle").defer(
        "certificate__der"
    ).order_by("domain__name", "certificate__subject", "id")
    return render(
        request,
        "adminconsole/anchor_list.html",
        {
            "page": paginate(request, anchors, per_page=ANCHORS_PER_PAGE),
            "query": query_without_page(request),
            "domains": Domain.objects.select_related("issuing_ca"),
        },
    )


@staff_required
@needs(Role.CERTIFICATES)
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
@needs(Role.CERTIFICATES)
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
@needs(Role.CERTIFICATES)
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


def _bundle_list(
    request: HttpRequest, form: BundleAddForm, *, status: int = 200, problem: str = ""
) -> HttpResponse:
    bundles = TrustBundle.objects.select_related("domain").defer("uploaded", "signer_pin")
    return render(
        request,
        "adminconsole/bundle_list.html",
        {"bundles": bundles, "form": form, "problem": problem},
        status=status,
    )


@staff_required
@require_GET
def bundle_list(request: HttpRequest) -> HttpResponse:
    return _bundle_list(request, BundleAddForm())


def _preview(pending: PendingBundle, domain: Domain, *, body: bytes | None) -> trust.BundlePreview:
    """Fetch (unless ``body`` is the bundle already) and verify the bundle, storing nothing."""
    return trust.preview_bundle(
        pending.url or body or b"",
        domain=domain.name,
        incoming=pending.incoming,
        outgoing=pending.outgoing,
        signer_pin=pending.signer_der,
        body=body if pending.url else None,
    )


def _bundle_add_confirm(
    request: HttpRequest,
    pending: PendingBundle,
    preview: trust.BundlePreview,
    form: BundleConfirmForm,
    *,
    status: int,
) -> HttpResponse:
    addition = impact.bundle_addition(
        preview,
        name=pending.name,
        incoming=pending.incoming,
        outgoing=pending.outgoing,
        file_name=pending.file_name,
        now=timezone.now(),
        refresh_interval=settings.HISP_BUNDLE_REFRESH_INTERVAL,
    )
    form.fields["confirm"].label = addition.impact.statement
    form["confirm"].label = addition.impact.statement  # a validated form has cached its field
    return render(
        request,
        "adminconsole/bundle_add_confirm.html",
        {"impact": addition.impact, "anchors": addition.anchors, "domain": preview.domain,
         "fetched": bool(preview.url), "form": form},
        status=status,
    )


def _restart(request: HttpRequest, problem: str, pending: PendingBundle | None = None) -> HttpResponse:
    """Back to the form (filled in again, but for the file), saying why nothing was added."""
    initial: dict[str, object] = {}
    if pending is not None:
        initial = {"name": pending.name, "domain": pending.domain, "url": pending.url,
                   "incoming": pending.incoming, "outgoing": pending.outgoing}
    return _bundle_list(request, BundleAddForm(initial=initial), status=400, problem=problem)


@staff_required
@needs(Role.CERTIFICATES)
@require_POST
def bundle_add(request: HttpRequest) -> HttpResponse:
    """Step one: fetch or read the bundle, verify it and show the anchors it holds, storing
    nothing. Step two (the confirmation page's form, ``preview`` set): add it only if it is
    still exactly the bundle shown; a URL whose bundle changed in between is shown again."""
    if "preview" in request.POST:
        return _bundle_add_confirmed(request)
    form = BundleAddForm(request.POST, request.FILES)
    if not form.is_valid():
        return _bundle_list(request, form, status=400)
    data = form.cleaned_data
    try:
        preview = trust.preview_bundle(
            data["url"] or data["upload"],
            domain=data["domain"].name,
            incoming=data["incoming"],
            outgoing=data["outgoing"],
            signer_pin=data["signer"],
        )
    except trust.TrustError as exc:
        form.add_error(None, f"The bundle was not added: {exc}")
        return _bundle_list(request, form, status=400)
    pending = PendingBundle(
        name=data["name"],
        domain=data["domain"].pk,
        url=preview.url,
        file_name="" if preview.url else str(getattr(request.FILES.get("upload"), "name", ""))[:200],
        incoming=data["incoming"],
        outgoing=data["outgoing"],
        signer=base64.b64encode(data["signer"]).decode("ascii") if data["signer"] else "",
        digest=preview.digest,
    )
    confirm = BundleConfirmForm.for_preview(pending, preview.body, user_id=int(request.user.pk))
    return _bundle_add_confirm(request, pending, preview, confirm, status=200)


def _bundle_add_confirmed(request: HttpRequest) -> HttpResponse:
    form = BundleConfirmForm(request.POST, user_id=int(request.user.pk))
    carried = form.pending()
    if carried is None:
        why = [*form.errors.get("preview", []), *form.errors.get("upload", [])]
        return _restart(request, str(next((e for e in why if e != CHANGED), CHANGED)))
    pending, upload = carried
    domain = Domain.objects.filter(pk=pending.domain).first()
    if domain is None:
        return _restart(request, "The bundle was not added: its domain is no longer hosted here.")
    if not form.is_valid():
        # The box was not ticked: show the bundle as it is now, and add nothing.
        try:
            preview = _preview(pending, domain, body=upload)
        except trust.TrustError as exc:
            return _restart(request, f"The bundle was not added: {exc}", pending)
        if preview.digest != pending.digest:
            return _changed(request, pending, preview)
        return _bundle_add_confirm(request, pending, preview, form, status=400)
    try:
        outcome = trust.add_bundle(
            pending.url or upload or b"",
            domain=domain.name,
            name=pending.name,
            incoming=pending.incoming,
            outgoing=pending.outgoing,
            signer_pin=pending.signer_der,
            expect_digest=pending.digest,
            actor=request.user,
            client=audit.client_address(request),
        )
    except trust.BundleChangedError as exc:
        try:
            preview = _preview(pending, domain, body=exc.body)
        except trust.TrustError as error:
            return _restart(
                request,
                f"The bundle changed since it was previewed and was not added: {error}",
                pending,
            )
        return _changed(request, pending, preview)
    except trust.TrustError as exc:
        return _restart(request, f"The bundle was not added: {exc}", pending)
    messages.success(request, f"Bundle added with {len(outcome.added)} anchor(s).")
    return redirect("adminconsole:bundle-detail", pk=outcome.bundle.pk)


def _changed(request: HttpRequest, pending: PendingBundle, preview: trust.BundlePreview) -> HttpResponse:
    """The URL now serves another bundle than the one previewed: show that one instead."""
    messages.error(request, "The bundle changed since it was previewed: nothing was added. "
                            "These are the anchors it holds now.")
    fresh = replace(pending, digest=preview.digest)
    form = BundleConfirmForm.for_preview(fresh, preview.body, user_id=int(request.user.pk))
    return _bundle_add_confirm(request, fresh, preview, form, status=409)


@staff_required
@needs(Role.CERTIFICATES)
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
        except trust.BundleRemovedError:
            messages.error(request, "The bundle was removed (by someone else) before the refresh "
                                    "was applied: nothing was applied.")
            return redirect("adminconsole:bundle-list")
        messages.success(
            request,
            f"Refreshed: {len(outcome.added)} added, {len(outcome.removed)} removed.",
        )
        return redirect("adminconsole:bundle-detail", pk=bundle.pk)
    return confirm_page(request, impact.bundle_refresh(change, now=timezone.now()), form,
                        cancel_url=cancel_url)


@staff_required
@needs(Role.CERTIFICATES)
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


@staff_required
@needs(Role.CERTIFICATES)
@require_http_methods(["GET", "POST"])
def bundle_remove(request: HttpRequest, pk: int) -> HttpResponse:
    """Stopping trust in a whole bundle needs a reason (audited) and an explicit confirmation."""
    bundle = access.get_bundle(pk)
    form = ReasonConfirmForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        try:
            removed = services.remove_bundle(
                request=request, bundle=bundle, reason=form.cleaned_data["reason"]
            )
        except services.StaffActionError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request, f"Bundle {bundle.name} removed: {bundle.domain.name} no longer trusts "
                         f"its {len(removed)} anchor(s).",
            )
            return redirect("adminconsole:bundle-list")
    return confirm_page(
        request,
        impact.bundle_removal(bundle, now=timezone.now()),
        form,
        cancel_url=reverse("adminconsole:bundle-detail", kwargs={"pk": bundle.pk}),
    )
