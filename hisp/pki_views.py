"""Public PKI publication: CA certificates (AIA caIssuers), CRLs and the OCSP responder.

Unauthenticated by design: relying parties anywhere fetch these. They expose only public data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils import timezone
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_safe

from hisp.ca import crl as crls
from hisp.ca import ocsp
from hisp.models import Certificate
from hisp.services import audit

# RFC 6960 appendix A.1: a request larger than this is malformed for our purposes (one CertID).
_MAX_OCSP_REQUEST = 4096


def _our_ca(ca_id: int) -> Certificate:
    ca = Certificate.objects.filter(
        pk=ca_id, binding=Certificate.Binding.CA, source=Certificate.Source.HOSTED
    ).first()
    if ca is None:
        raise Http404("no such CA")
    return ca


@require_safe  # HEAD too: a relying party's cache may ask whether its copy is current
def ca_certificate(request: HttpRequest, ca_id: int) -> HttpResponse:
    # RFC 5280 4.2.2.1: caIssuers over HTTP serves a DER certificate as application/pkix-cert.
    ca = _our_ca(ca_id)
    response = HttpResponse(bytes(ca.der), content_type="application/pkix-cert")
    response["Cache-Control"] = "public, max-age=86400"
    return response


@require_safe
def crl(request: HttpRequest, ca_id: int) -> HttpResponse:
    # RFC 5280 4.2.1.13: a DER CRL as application/pkix-crl.
    current = crls.current(_our_ca(ca_id))
    response = HttpResponse(bytes(current.der), content_type="application/pkix-crl")
    response["Cache-Control"] = "public, max-age=300"
    return response


def _ocsp_response(request: HttpRequest, body: bytes) -> HttpResponse:
    answer = ocsp.answer(body, client=audit.client_address(request))
    response = HttpResponse(answer.der, content_type="application/ocsp-response")
    if request.method == "GET" and answer.shared:
        _cacheable(response, answer)
    else:
        # Bound to one request (a nonce), or no status at all (malformedRequest, tryLater...).
        response["Cache-Control"] = "no-cache"
    return response


def _cacheable(response: HttpResponse, answer: ocsp.Answer) -> None:
    """RFC 5019 section 6.2: an answer every client gets alike may be kept by HTTP caches (a
    CDN in front of the responder) until its nextUpdate, as relying parties keep it anyway."""
    this_update, next_update = answer.period()
    left = max(0, int((next_update - timezone.now()).total_seconds()))
    response["Cache-Control"] = f"max-age={left}, public, no-transform, must-revalidate"
    response["Last-Modified"] = http_date(this_update.timestamp())
    response["Expires"] = http_date(next_update.timestamp())
    response["ETag"] = f'"{hashlib.sha256(answer.der).hexdigest()}"'


@csrf_exempt  # OCSP clients POST DER without cookies; the answer is public and side-effect free
@require_http_methods(["POST"])
def ocsp_post(request: HttpRequest) -> HttpResponse:
    if request.content_type != "application/ocsp-request":
        return HttpResponseBadRequest("Content-Type must be application/ocsp-request")
    # Judge the declared length before reading: this endpoint is open to anyone, and reading
    # first would hold up to DATA_UPLOAD_MAX_MEMORY_SIZE in memory per request.
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > _MAX_OCSP_REQUEST:
        return HttpResponseBadRequest("OCSP request too large")
    body = request.body
    if len(body) > _MAX_OCSP_REQUEST:
        return HttpResponseBadRequest("OCSP request too large")
    return _ocsp_response(request, body)


@require_GET
def ocsp_get(request: HttpRequest, encoded: str) -> HttpResponse:
    # RFC 6960 appendix A.1: GET {url}/{url-encoding of base64 of the DER OCSPRequest}; Django
    # has already undone the URL encoding of the path.
    if len(encoded) > _MAX_OCSP_REQUEST * 2:
        return HttpResponseBadRequest("OCSP request too large")
    try:
        body = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return HttpResponseBadRequest("not base64")
    return _ocsp_response(request, body)
