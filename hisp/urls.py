"""Root URL configuration: webmail under /mail/, the admin console under /console/, PKI
publication (CRL, CA certificates, OCSP) under /pki/, the mail API under /api/v1/."""

from __future__ import annotations

from django.urls import include, path

from hisp import views

urlpatterns = [
    path("", views.root, name="root"),
    path("healthz", views.healthz, name="healthz"),
    path("mail/", include("webmail.urls")),
    path("console/", include("adminconsole.urls")),
    path("pki/", include("hisp.pki_urls")),
    path("api/v1/", include("webmail.api.urls")),
]
