"""Staff screens fed with text from outside (partners' certificates, search words): control
characters must neither reach the database (PostgreSQL refuses a NUL, even in a query) nor
turn into a 500."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from hisp.models import AuditEvent, Certificate
from tests.adminconsole import pkitools
from tests.factories import MessageFactory


def test_a_partner_certificate_with_a_nul_in_its_address_is_refused(
    staff_client: Client, sam: Any
) -> None:
    """The subjectAltName is an IA5String, which can hold a NUL: looked up as the bound
    address it made the import a 500. No Direct address holds a control character."""
    partner = pkitools.make_leaf(pkitools.make_ca("Partner CA"), "zoe\x00@partner.example.net")
    response = staff_client.post(
        reverse("adminconsole:certificate-import"),
        {"certificate": SimpleUploadedFile("zoe.pem", partner.pem)},
    )
    assert response.status_code == 400
    [error] = response.context["form"].non_field_errors()
    assert "control character" in error
    assert not Certificate.objects.filter(fingerprint_sha256=partner.fingerprint).exists()
    assert not AuditEvent.objects.filter(action="certificate.import").exists()


def test_an_anchor_named_with_control_characters_is_imported_and_shown(
    staff_client: Client, domain: Any
) -> None:
    """A partner's CA name is theirs to choose, NUL and line ends included. Its subject is
    stored in RFC 4514 form, which writes a NUL as \\00; the pages escape the rest."""
    partner = pkitools.make_ca("Partner\x00 Root\r\nInjected: yes")
    step_one = staff_client.post(reverse("adminconsole:anchor-import"), {
        "domain": domain.pk, "incoming": "on", "outgoing": "on",
        "certificate": SimpleUploadedFile("anchor.pem", partner.pem),
    })
    assert step_one.status_code == 200
    form = step_one.context["form"]
    data = {name: form[name].value() for name in ("domain", "certificate_pem", "incoming",
                                                   "outgoing")}
    response = staff_client.post(reverse("adminconsole:anchor-confirm"),
                                 {**data, "fingerprint": partner.fingerprint})
    assert response.status_code == 302
    row = Certificate.objects.get(fingerprint_sha256=partner.fingerprint)
    assert "\x00" not in row.subject and "\x00" not in row.bound_name
    assert "Partner\\00 Root" in row.subject
    page = staff_client.get(reverse("adminconsole:certificate-detail", kwargs={"pk": row.pk}))
    assert page.status_code == 200
    assert AuditEvent.objects.filter(action="anchor.import").exists()


def test_the_console_isolates_the_signers_organisation(staff_client: Client) -> None:
    # A right-to-left override in a partner's certificate cannot run on into our words.
    message = MessageFactory(signer_organisation="Clinic \u202ecilbup")
    body = staff_client.get(
        reverse("adminconsole:message-detail", kwargs={"pk": message.pk})
    ).content.decode()
    assert "(<bdi>Clinic \u202ecilbup</bdi>)</dd>" in body
