"""PKI publication URLs (CRL distribution points, AIA caIssuers, OCSP). They are written into
every certificate we issue, so they never change (see hisp.ca.publication)."""

from __future__ import annotations

from django.urls import path, re_path

from hisp import pki_views

app_name = "pki"
urlpatterns = [
    path("ca/<int:ca_id>.cer", pki_views.ca_certificate, name="ca-certificate"),
    path("crl/<int:ca_id>.crl", pki_views.crl, name="crl"),
    path("ocsp", pki_views.ocsp_post, name="ocsp"),
    path("ocsp/", pki_views.ocsp_post, name="ocsp-slash"),
    re_path(r"^ocsp/(?P<encoded>[A-Za-z0-9+/=]+)$", pki_views.ocsp_get, name="ocsp-get"),
]
