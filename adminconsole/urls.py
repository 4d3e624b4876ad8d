"""Admin console URLs (mounted at /console/, namespace ``adminconsole``)."""

from __future__ import annotations

from django.urls import path

from adminconsole.views import (
    addresses,
    audit,
    certificates,
    dashboard,
    discovery,
    domains,
    invitations,
    queues,
    routes,
    trust,
)

app_name = "adminconsole"
urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    # Domains
    path("domains/", domains.domain_list, name="domain-list"),
    path("domains/add/", domains.domain_add, name="domain-add"),
    path("domains/<int:pk>/", domains.domain_detail, name="domain-detail"),
    path("domains/<int:pk>/ca-rollover/", domains.ca_rollover, name="domain-ca-rollover"),
    # Organisations and providers
    path("addresses/", addresses.address_list, name="address-list"),
    path("addresses/add/", addresses.address_add, name="address-add"),
    path("addresses/<int:pk>/", addresses.address_detail, name="address-detail"),
    path("addresses/<int:pk>/proofing/", addresses.record_proofing, name="address-proofing"),
    path("addresses/<int:pk>/status/", addresses.change_status, name="address-status"),
    path(
        "addresses/<int:pk>/status/<slug:transition>/",
        addresses.status_confirm,
        name="address-status-confirm",
    ),
    path("addresses/<int:pk>/grants/", addresses.grant_access, name="address-grant"),
    path(
        "addresses/<int:pk>/grants/<int:grant_pk>/revoke/",
        addresses.revoke_grant,
        name="address-revoke-grant",
    ),
    path(
        "addresses/<int:pk>/reset-password/", addresses.reset_password, name="address-reset-password"
    ),
    path("addresses/<int:pk>/invite/", invitations.invite, name="address-invite"),
    path(
        "addresses/<int:pk>/invitations/<int:invitation_pk>/revoke/",
        invitations.invitation_revoke,
        name="address-invitation-revoke",
    ),
    # Certificates
    path("certificates/", certificates.certificate_list, name="certificate-list"),
    path("certificates/<int:pk>/", certificates.certificate_detail, name="certificate-detail"),
    path("certificates/issue/", certificates.certificate_issue, name="certificate-issue"),
    path("certificates/import/", certificates.certificate_import, name="certificate-import"),
    path("certificates/<int:pk>/pem/", certificates.certificate_pem, name="certificate-pem"),
    path("certificates/<int:pk>/revoke/", certificates.certificate_revoke, name="certificate-revoke"),
    path("certificates/<int:pk>/renew/", certificates.certificate_renew, name="certificate-renew"),
    path("certificates/<int:pk>/pkcs12/", certificates.certificate_pkcs12, name="certificate-pkcs12"),
    # Trust
    path("trust/anchors/", trust.anchor_list, name="anchor-list"),
    path("trust/anchors/import/", trust.anchor_import, name="anchor-import"),
    path("trust/anchors/confirm/", trust.anchor_confirm, name="anchor-confirm"),
    path("trust/anchors/<int:pk>/remove/", trust.anchor_remove, name="anchor-remove"),
    path("trust/anchors/export/<int:pk>/", trust.anchor_export, name="anchor-export"),
    path("trust/bundles/", trust.bundle_list, name="bundle-list"),
    path("trust/bundles/add/", trust.bundle_add, name="bundle-add"),
    path("trust/bundles/<int:pk>/", trust.bundle_detail, name="bundle-detail"),
    path("trust/bundles/<int:pk>/refresh/", trust.bundle_refresh, name="bundle-refresh"),
    path("trust/bundles/<int:pk>/remove/", trust.bundle_remove, name="bundle-remove"),
    # Routes
    path("routes/", routes.route_list, name="route-list"),
    path("routes/set/", routes.route_set, name="route-set"),
    path("routes/<int:pk>/delete/", routes.route_delete, name="route-delete"),
    # Queues
    path("queues/messages/", queues.message_list, name="message-list"),
    path("queues/messages/<int:pk>/", queues.message_detail, name="message-detail"),
    path("queues/deliveries/", queues.delivery_list, name="delivery-list"),
    path("queues/deliveries/<int:pk>/", queues.delivery_detail, name="delivery-detail"),
    path("queues/deliveries/<int:pk>/retry/", queues.delivery_retry, name="delivery-retry"),
    path("queues/deliveries/<int:pk>/fail/", queues.delivery_fail, name="delivery-fail"),
    # Discovery
    path("discovery/", discovery.lookup, name="discovery"),
    path("discovery/flush/", discovery.flush, name="discovery-flush"),
    # Audit
    path("audit/", audit.audit_log, name="audit-log"),
    path("audit/export/", audit.audit_export, name="audit-export"),
]
