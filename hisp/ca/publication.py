"""Stable URLs where this HISP publishes its CA certificates, CRLs and OCSP answers.

They are written into every certificate we issue (CRL distribution point, AIA caIssuers and OCSP,
RFC 5280 sections 4.2.1.13 and 4.2.2.1), so they must never change for a CA's lifetime: they name
the CA by its row id under ``settings.HISP_WEB_URL``.
"""

from __future__ import annotations

from django.conf import settings

from hisp.models import Certificate


def crl_url(ca: Certificate) -> str:
    return f"{settings.HISP_WEB_URL}/pki/crl/{ca.pk}.crl"


def ca_issuers_url(ca: Certificate) -> str:
    return f"{settings.HISP_WEB_URL}/pki/ca/{ca.pk}.cer"


def ocsp_url() -> str:
    # One responder for every CA: the request names its issuer by key hash (RFC 6960 4.1.1).
    return f"{settings.HISP_WEB_URL}/pki/ocsp"
