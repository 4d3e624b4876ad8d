"""Certificates: list, detail parsed from the DER, issue, revoke, export.

Never any key material: the private key relation is not loaded by these views, and PKCS#12
export (the one way a key leaves) is a download protected by a staff-typed passphrase.
"""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from adminconsole import access, certinfo, impact
from adminconsole.access import needs, staff_required
from adminconsole.forms.certificates import (
    CertificateFilterForm,
    CertificateImportForm,
    IssueCertificateForm,
    Pkcs12ExportForm,
    RevokeForm,
)
from adminconsole.roles import Role
from adminconsole.views.common import audit_search, paginate, query_without_page
from adminconsole.views.dashboard import expiring
from hisp.models import Address, Certificate
from hisp.services import audit, outside_revocation, pki


@staff_required
@require_GET
def certificate_list(request: HttpRequest) -> HttpResponse:
    form = CertificateFilterForm(request.GET or None)
    certificates = Certificate.objects.defer("der").order_by("not_after", "id")
    if form.is_valid():
        data = form.cleaned_data
        if data["binding"]:
            certificates = certificates.filter(binding=data["binding"])
        if data["source"]:
            certificates = certificates.filter(source=data["source"])
        if data["domain"]:
            certificates = certificates.filter(domain=data["domain"])
        if data["expiring"]:
            certificates = expiring(certificates)  # the rows the dashboard counts
        if data["revoked"] == "yes":
            certificates = certificates.filter(revoked_at__isnull=False)
        elif data["revoked"] == "no":
            certificates = certificates.filter(revoked_at__isnull=True)
        if data["q"]:
            certificates = certificates.filter(
                Q(bound_name__icontains=data["q"]) | Q(subject__icontains=data["q"])
            )
    page = paginate(request, certificates)
    audit_search(request, form, page, action="certificate.console-search", listing="certificates")
    return render(
        request,
        "adminconsole/certificate_list.html",
        {
            "form": form,
            "page": page,
            "query": query_without_page(request),
            "now": timezone.now(),
        },
    )


@staff_required
@require_GET
def certificate_detail(request: HttpRequest, pk: int) -> HttpResponse:
    certificate = access.get_certificate(pk)
    context = {
        "certificate": certificate,
        "info": certinfo.try_describe_der(bytes(certificate.der)),
        "has_key": certificate.private_key_id is not None,
        "exportable": certificate.private_key_id is not None
        and certificate.binding != Certificate.Binding.CA
        and certificate.revoked_at is None,
        "anchorings": certificate.anchorings.select_related("domain", "bundle"),
        # Another CA's certificate we publish and sign with: when its CA was last asked.
        "outside_check": (outside_revocation.check_state(certificate)
                          if outside_revocation.applies(certificate) else None),
        "outside_ca": outside_revocation.applies(certificate),
        "now": timezone.now(),
    }
    return render(request, "adminconsole/certificate_detail.html", context)


@staff_required
@require_GET
def certificate_pem(request: HttpRequest, pk: int) -> HttpResponse:
    """The public certificate as PEM, for a partner or an edge client."""
    certificate = access.get_certificate(pk)
    pem = certinfo.load(bytes(certificate.der)).public_bytes(certinfo.PEM)
    audit.record(
        action="certificate.export_pem",
        obj=certificate,
        request=request,
        fingerprint_sha256=certificate.fingerprint_sha256,
    )
    response = HttpResponse(pem, content_type="application/pem-certificate-chain")
    response["Content-Disposition"] = f'attachment; filename="{_filename(certificate)}.pem"'
    return response


def _filename(certificate: Certificate) -> str:
    safe = "".join(ch if ch.isalnum() or ch in ".-_" else "_" for ch in certificate.bound_name)
    return f"{safe or 'certificate'}-{certificate.serial[:16]}"


def _issue_page(request: HttpRequest, form: IssueCertificateForm, *, status: int = 200) -> HttpResponse:
    return render(request, "adminconsole/certificate_issue.html", {"form": form}, status=status)


@staff_required
@needs(Role.CERTIFICATES)
@require_http_methods(["GET", "POST"])
def certificate_issue(request: HttpRequest) -> HttpResponse:
    """Issue address- or domain-bound certificate(s) with new keys under the domain's CA."""
    if request.method == "GET":
        return _issue_page(request, IssueCertificateForm(initial=request.GET.dict()))
    form = IssueCertificateForm(request.POST)
    if form.is_valid():
        target = form.cleaned_data["target"]
        name = target.address if isinstance(target, Address) else target.name
        try:
            issued = pki.issue_for(name, actor=request.user,
                                   client=audit.client_address(request))
        except pki.PkiError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Issued {len(issued)} certificate(s) for {name}.")
            return redirect("adminconsole:certificate-detail", pk=issued[0].pk)
    return _issue_page(request, form, status=400)


@staff_required
@needs(Role.CERTIFICATES)
@require_http_methods(["GET", "POST"])
def certificate_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Revocation needs a reason and an explicit confirmation; the CRL is regenerated at once."""
    certificate = access.get_certificate(pk)
    # Bound on every POST, even an empty one, so a missing confirmation is shown as an error.
    form = RevokeForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        try:
            pki.revoke(certificate, reason=form.cleaned_data["reason"],
                       note=form.cleaned_data["note"], actor=request.user,
                       client=audit.client_address(request))
        except pki.PkiError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Certificate revoked; the CRL was regenerated.")
            return redirect("adminconsole:certificate-detail", pk=certificate.pk)
    status = 400 if request.method == "POST" else 200
    # The box names the certificate being revoked, as every other confirmation does.
    statement = ("I understand that relying parties will reject the certificate for "
                 f"{certificate.bound_name or certificate.subject} from now on.")
    form.fields["confirm"].label = statement
    form["confirm"].label = statement  # a validated form has cached its bound field
    return render(
        request,
        "adminconsole/certificate_revoke.html",
        {
            "certificate": certificate,
            "form": form,
            "info": certinfo.try_describe_der(bytes(certificate.der)),
            "effects": impact.certificate_revocation(certificate, now=timezone.now()),
            "blocked": impact.certificate_revocation_blocked(certificate),
        },
        status=status,
    )


@staff_required
@needs(Role.CERTIFICATES)
@require_POST
def certificate_renew(request: HttpRequest, pk: int) -> HttpResponse:
    certificate = access.get_certificate(pk)
    try:
        new = pki.renew(certificate, actor=request.user, client=audit.client_address(request))
    except pki.PkiError as exc:
        messages.error(request, str(exc))
        return redirect("adminconsole:certificate-detail", pk=certificate.pk)
    messages.success(request, "Renewed: the old key stays to decrypt mail in flight.")
    return redirect("adminconsole:certificate-detail", pk=new.pk)


@staff_required
@needs(Role.CERTIFICATES)
@require_http_methods(["GET", "POST"])
@sensitive_post_parameters("passphrase", "passphrase_again")  # never in an error report
def certificate_pkcs12(request: HttpRequest, pk: int) -> HttpResponse:
    """The one way a hosted key leaves: a PKCS#12 under a passphrase the staff member types."""
    certificate = access.get_certificate(pk)
    # A CA key never leaves: an edge client needs its own end-entity key, nothing more.
    if (certificate.private_key_id is None or certificate.binding == Certificate.Binding.CA
            or certificate.revoked_at is not None):  # as the detail page's "exportable"
        raise Http404("no exportable key for this certificate")
    form = Pkcs12ExportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            data = pki.export_pkcs12(
                certificate,
                passphrase=form.cleaned_data["passphrase"],
                actor=request.user,
                client=audit.client_address(request),
            )
        except pki.PkiError as exc:
            form.add_error(None, str(exc))
        else:
            response = HttpResponse(data, content_type="application/x-pkcs12")
            response["Content-Disposition"] = f'attachment; filename="{_filename(certificate)}.p12"'
            response["Cache-Control"] = "no-store"
            return response
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "adminconsole/certificate_pkcs12.html",
        {"certificate": certificate, "form": form},
        status=status,
    )


@staff_required
@needs(Role.CERTIFICATES)
@require_http_methods(["GET", "POST"])
@sensitive_post_parameters("password")  # never in an error report
def certificate_import(request: HttpRequest) -> HttpResponse:
    form = CertificateImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            row = pki.import_certificate(
                data["certificate"],
                key_data=data["key"],
                password=data["password"] or None,
                actor=request.user,
                client=audit.client_address(request),
            )
        except pki.PkiError as exc:
            # The service's messages never repeat the uploaded bytes (they may be a key).
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Imported the certificate for {row.bound_name}.")
            _warn_unconfirmed(request, row)
            return redirect("adminconsole:certificate-detail", pk=row.pk)
    return render(
        request,
        "adminconsole/certificate_import.html",
        {"form": form},
        status=400 if request.method == "POST" else 200,
    )


def _warn_unconfirmed(request: HttpRequest, row: Certificate) -> None:
    """An outside CA that could not be asked at import is not a refusal, but a bare "Imported"
    read as all clear: say so next to it, as the CLI does on stderr."""
    if not outside_revocation.applies(row):
        return
    checked = outside_revocation.check_state(row)
    if checked is not None and checked.result is not outside_revocation.Result.GOOD:
        messages.warning(request, f"Revocation not confirmed: {checked.problem}. The certificate "
                                  "is in use; its issuer is asked again every few hours.")
