"""Console findings of the security review: every action's audit event names the staff member
*and* where they acted from, also when a shared service (pki, trust, identity) does the work;
key passwords never reach an error report; console pages are never cached."""

from __future__ import annotations

from typing import Any

from django.test import Client
from django.urls import reverse

from hisp.models import Address, AuditEvent, Certificate, Domain
from hisp.services import identity

WHERE = "198.51.100.7"


def _events(action: str) -> list[tuple[Any, str | None]]:
    return [(e.actor_label, e.client_address) for e in AuditEvent.objects.filter(action=action)]


def test_domain_and_address_creation_record_the_staff_client(staff_client: Client, sam: Any) -> None:
    staff_client.post(reverse("adminconsole:domain-add"), {"name": "clinic.example.com",
                                                           "kind": "provider"}, REMOTE_ADDR=WHERE)
    staff_client.post(reverse("adminconsole:address-add"),
                      {"address": "desk@clinic.example.com", "name": "Desk"}, REMOTE_ADDR=WHERE)
    assert _events("domain.add") == [("sam", WHERE)]
    # The domain's postmaster (made with the domain) and desk@: both the staff member's doing.
    assert _events("address.add") == [("sam", WHERE), ("sam", WHERE)]


def test_certificate_issue_renew_and_revoke_record_the_staff_client(
    staff_client: Client, sam: Any
) -> None:
    hosted = identity.add_domain("clinic.example.com")
    address = identity.add_address("dr.who@clinic.example.com", name="Dr Who")
    staff_client.post(reverse("adminconsole:certificate-issue"),
                      {"binding": "address", "subject": address.address}, REMOTE_ADDR=WHERE)
    issued = Certificate.objects.get(address=address, binding=Certificate.Binding.ADDRESS)
    staff_client.post(reverse("adminconsole:certificate-renew", kwargs={"pk": issued.pk}),
                      REMOTE_ADDR=WHERE)
    issued.refresh_from_db()
    staff_client.post(reverse("adminconsole:certificate-revoke", kwargs={"pk": issued.superseded_by_id}),
                      {"reason": "key_compromise", "note": "laptop stolen", "confirm": "on"},
                      REMOTE_ADDR=WHERE)
    staff_client.get(reverse("adminconsole:anchor-export", kwargs={"pk": hosted.pk}),
                     REMOTE_ADDR=WHERE)
    assert _events("certificate.issue") == [("sam", WHERE)]
    assert _events("certificate.renew") == [("sam", WHERE)]
    assert _events("certificate.revoke") == [("sam", WHERE)]
    assert _events("anchor.export") == [("sam", WHERE)]
    assert Address.objects.filter(pk=address.pk).exists() and Domain.objects.count() == 1


def test_key_passwords_are_kept_out_of_error_reports(staff_client: Client) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.views.debug import SafeExceptionReporterFilter

    response = staff_client.post(reverse("adminconsole:certificate-import"), {
        "certificate": SimpleUploadedFile("c.p12", b"not a certificate"),
        "password": "pkcs12-secret-passphrase",
    })
    assert response.status_code == 400
    shown = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    assert shown["password"] != "pkcs12-secret-passphrase"


def test_console_pages_are_never_stored_by_the_browser(staff_client: Client) -> None:
    for name in ("adminconsole:dashboard", "adminconsole:audit-log", "adminconsole:message-list"):
        response = staff_client.get(reverse(name))
        assert response.status_code == 200
        assert "no-store" in response["Cache-Control"], name


def test_staff_viewing_a_message_or_delivery_is_audited(staff_client: Client, world: Any) -> None:
    staff_client.get(reverse("adminconsole:message-detail", kwargs={"pk": world.message.pk}),
                     REMOTE_ADDR=WHERE)
    staff_client.get(reverse("adminconsole:delivery-detail", kwargs={"pk": world.delivery.pk}),
                     REMOTE_ADDR=WHERE)
    assert _events("message.console-view") == [("sam", WHERE)]
    assert _events("delivery.console-view") == [("sam", WHERE)]
    event = AuditEvent.objects.get(action="delivery.console-view")
    assert event.object_id == str(world.delivery.pk)
    assert event.detail == {"message": world.delivery.message_id}
