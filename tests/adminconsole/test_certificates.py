from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from hisp.models import (
    Address,
    AuditEvent,
    Certificate,
    CertificateRevocationList,
    Domain,
    TrustAnchor,
)
from hisp.services import identity
from tests.adminconsole import pkitools

PASSPHRASE = "tulip-granite-harbour-42"


@pytest.fixture
def hosted(db: None) -> Domain:
    return identity.add_domain("clinic.example.com")


@pytest.fixture
def hosted_address(hosted: Domain) -> Address:
    return identity.add_address("dr.who@clinic.example.com", name="Dr Who", address_cert=True)


def _cert(address: Address) -> Certificate:
    return Certificate.objects.get(address=address, binding=Certificate.Binding.ADDRESS)


def _url(name: str, certificate: Certificate) -> str:
    return reverse(f"adminconsole:{name}", kwargs={"pk": certificate.pk})


def test_detail_shows_fields_parsed_from_the_der_and_no_key(
    staff_client: Client, hosted_address: Address
) -> None:
    certificate = _cert(hosted_address)
    response = staff_client.get(_url("certificate-detail", certificate))
    info = response.context["info"]
    assert info.email_sans == ("dr.who@clinic.example.com",)
    assert info.key_usage == ("digitalSignature", "keyEncipherment")
    assert info.extended_key_usage == ("emailProtection",)
    assert info.fingerprint_sha256 == certificate.fingerprint_sha256
    assert info.public_key == "RSA 2048 bits"
    assert info.fingerprint_colons.encode() in response.content
    assert b"PRIVATE KEY" not in response.content
    assert b"wrapped; never shown" in response.content


def test_pem_export_is_the_public_certificate_and_is_audited(
    staff_client: Client, hosted_address: Address, sam: Any
) -> None:
    certificate = _cert(hosted_address)
    response = staff_client.get(_url("certificate-pem", certificate))
    assert response.status_code == 200
    loaded = x509.load_pem_x509_certificate(response.content)
    assert loaded.serial_number == int(certificate.serial, 16)
    assert b"PRIVATE KEY" not in response.content
    event = AuditEvent.objects.get(action="certificate.export_pem")
    assert event.actor == sam
    assert event.detail["fingerprint_sha256"] == certificate.fingerprint_sha256


def test_list_filters_by_binding_revocation_and_expiry(
    staff_client: Client, hosted_address: Address, hosted: Domain
) -> None:
    ca = pkitools.make_ca("Soon CA")
    soon = pkitools.store(
        pkitools.make_leaf(ca, "soon@clinic.example.com", days=10),
        source=Certificate.Source.HOSTED, binding=Certificate.Binding.ADDRESS,
        bound_name="soon@clinic.example.com",
    )
    revoked = pkitools.store(
        pkitools.make_leaf(ca, "gone@clinic.example.com"),
        source=Certificate.Source.HOSTED, binding=Certificate.Binding.ADDRESS,
        bound_name="gone@clinic.example.com", revoked_at=timezone.now(),
        revocation_reason="key_compromise",
    )
    url = reverse("adminconsole:certificate-list")

    def listed(**params: str) -> set[int]:
        return {c.pk for c in staff_client.get(url, params).context["page"]}

    assert listed(expiring="on") == {soon.pk}
    assert listed(revoked="yes") == {revoked.pk}
    assert revoked.pk not in listed(revoked="no")
    assert listed(binding="domain") == set(
        Certificate.objects.filter(binding="domain").values_list("pk", flat=True)
    )
    assert listed(q="dr.who") == {_cert(hosted_address).pk}


def test_staff_issues_an_address_certificate(
    staff_client: Client, hosted: Domain, sam: Any
) -> None:
    address = identity.add_address("desk@clinic.example.com", name="Front desk")
    response = staff_client.post(
        reverse("adminconsole:certificate-issue"),
        {"binding": "address", "subject": "desk@CLINIC.example.com"},
    )
    issued = Certificate.objects.get(address=address, binding="address")
    assert response.status_code == 302
    assert response["Location"] == _url("certificate-detail", issued)
    event = AuditEvent.objects.get(action="certificate.issue", object_id=str(issued.pk))
    assert event.actor == sam


@pytest.mark.parametrize(
    "data,field",
    [
        ({"binding": "address", "subject": "nobody@clinic.example.com"}, "subject"),
        ({"binding": "domain", "subject": "elsewhere.example.net"}, "subject"),
        ({"binding": "ca", "subject": "clinic.example.com"}, "binding"),
        ({"binding": "address", "subject": "<script>x</script>" * 30}, "subject"),
    ],
)
def test_issue_rejects_unknown_or_hostile_subjects(
    staff_client: Client, hosted: Domain, data: dict[str, str], field: str
) -> None:
    before = Certificate.objects.count()
    response = staff_client.post(reverse("adminconsole:certificate-issue"), data)
    assert response.status_code == 400
    assert response.context["form"].errors[field]
    assert Certificate.objects.count() == before
    assert b"<script>x" not in response.content


WHY = {"note": "Laptop with the key stolen on 2026-11-20"}


def test_revoke_needs_confirmation(staff_client: Client, hosted_address: Address) -> None:
    certificate = _cert(hosted_address)
    page = staff_client.get(_url("certificate-revoke", certificate))
    assert page.status_code == 200
    assert b"cannot be undone" in page.content
    response = staff_client.post(
        _url("certificate-revoke", certificate), {"reason": "key_compromise", **WHY}
    )
    assert response.status_code == 400
    assert response.context["form"].errors["confirm"]
    certificate.refresh_from_db()
    assert certificate.revoked_at is None
    assert not AuditEvent.objects.filter(action="certificate.revoke").exists()


def test_revoke_with_reason_regenerates_the_crl_and_is_audited(
    staff_client: Client, hosted_address: Address, sam: Any
) -> None:
    certificate = _cert(hosted_address)
    crls_before = CertificateRevocationList.objects.filter(issuer=certificate.issued_by).count()
    response = staff_client.post(
        _url("certificate-revoke", certificate),
        {"reason": "key_compromise", "confirm": "on", **WHY},
    )
    assert response.status_code == 302
    certificate.refresh_from_db()
    assert certificate.revoked_at is not None
    assert certificate.revocation_reason == "key_compromise"
    assert CertificateRevocationList.objects.filter(issuer=certificate.issued_by).count() == crls_before + 1
    event = AuditEvent.objects.get(action="certificate.revoke")
    assert event.actor == sam
    assert event.detail["reason"] == "key_compromise"
    assert event.detail["note"] == WHY["note"]


def test_revoking_needs_the_staff_members_own_words(
    staff_client: Client, hosted_address: Address
) -> None:
    # The CRL's code alone ("unspecified", mostly) does not tell a later reader why.
    certificate = _cert(hosted_address)
    for note in ("", "   "):
        response = staff_client.post(
            _url("certificate-revoke", certificate),
            {"reason": "unspecified", "confirm": "on", "note": note},
        )
        assert response.status_code == 400
        assert "Say why" in str(response.context["form"].errors["note"])
    certificate.refresh_from_db()
    assert certificate.revoked_at is None
    assert not AuditEvent.objects.filter(action="certificate.revoke").exists()


def test_revoke_rejects_an_unknown_reason(staff_client: Client, hosted_address: Address) -> None:
    certificate = _cert(hosted_address)
    response = staff_client.post(
        _url("certificate-revoke", certificate), {"reason": "bored", "confirm": "on", **WHY}
    )
    assert response.status_code == 400
    assert response.context["form"].errors["reason"]


def test_revoking_twice_is_a_form_error(staff_client: Client, hosted_address: Address) -> None:
    certificate = _cert(hosted_address)
    data = {"reason": "superseded", "confirm": "on", **WHY}
    staff_client.post(_url("certificate-revoke", certificate), data)
    response = staff_client.post(_url("certificate-revoke", certificate), data)
    assert response.status_code == 400
    assert "already revoked" in str(response.context["form"].non_field_errors())
    assert AuditEvent.objects.filter(action="certificate.revoke").count() == 1


def test_revoking_a_partner_certificate_is_refused(staff_client: Client, world: Any) -> None:
    response = staff_client.post(
        _url("certificate-revoke", world.anchor.certificate),
        {"reason": "superseded", "confirm": "on", **WHY},
    )
    assert response.status_code == 400
    assert "issued by this HISP" in str(response.context["form"].non_field_errors())


def test_renew_supersedes_the_old_certificate(
    staff_client: Client, hosted_address: Address
) -> None:
    old = _cert(hosted_address)
    response = staff_client.post(_url("certificate-renew", old))
    old.refresh_from_db()
    assert old.superseded_by is not None
    assert response["Location"] == _url("certificate-detail", old.superseded_by)
    assert AuditEvent.objects.filter(action="certificate.renew").count() == 1


def test_pkcs12_export_opens_with_the_typed_passphrase_and_is_audited(
    staff_client: Client, hosted_address: Address, sam: Any, tmp_path: Path
) -> None:
    certificate = _cert(hosted_address)
    assert staff_client.get(_url("certificate-pkcs12", certificate)).status_code == 200
    response = staff_client.post(
        _url("certificate-pkcs12", certificate),
        {"passphrase": PASSPHRASE, "passphrase_again": PASSPHRASE},
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-pkcs12"
    assert "no-store" in response["Cache-Control"]
    key, cert, _ = pkcs12.load_key_and_certificates(response.content, PASSPHRASE.encode())
    assert key is not None
    assert cert is not None and cert.serial_number == int(certificate.serial, 16)
    # The independent oracle: OpenSSL opens it with the passphrase too.
    bundle = tmp_path / "export.p12"
    bundle.write_bytes(response.content)
    subprocess.run(
        ["openssl", "pkcs12", "-in", str(bundle), "-passin", f"pass:{PASSPHRASE}", "-nokeys",
         "-out", str(tmp_path / "certs.pem")],
        check=True, capture_output=True,
    )
    event = AuditEvent.objects.get(action="certificate.export_pkcs12")
    assert event.actor == sam
    assert event.client_address == "127.0.0.1"
    assert PASSPHRASE not in str(event.detail)


def test_a_revoked_certificates_key_is_not_exported_even_by_its_url(
    staff_client: Client, hosted_address: Address
) -> None:
    from hisp.services import pki

    certificate = pki.revoke(_cert(hosted_address),
                             reason=Certificate.RevocationReason.KEY_COMPROMISE)
    url = _url("certificate-pkcs12", certificate)
    assert staff_client.get(url).status_code == 404
    posted = {"passphrase": PASSPHRASE, "passphrase_again": PASSPHRASE}
    assert staff_client.post(url, posted).status_code == 404
    with pytest.raises(pki.PkiError, match="revoked"):
        pki.export_pkcs12(certificate, passphrase=PASSPHRASE, actor="test")
    assert not AuditEvent.objects.filter(action="certificate.export_pkcs12").exists()


@pytest.mark.parametrize(
    "data,field",
    [
        ({"passphrase": "short", "passphrase_again": "short"}, "passphrase"),
        ({"passphrase": PASSPHRASE, "passphrase_again": PASSPHRASE + "x"}, "passphrase_again"),
        ({"passphrase": "x" * 500, "passphrase_again": "x" * 500}, "passphrase"),
    ],
)
def test_pkcs12_export_rejects_bad_passphrases(
    staff_client: Client, hosted_address: Address, data: dict[str, str], field: str
) -> None:
    response = staff_client.post(_url("certificate-pkcs12", _cert(hosted_address)), data)
    assert response.status_code == 400
    assert response.context["form"].errors[field]
    assert not AuditEvent.objects.filter(action="certificate.export_pkcs12").exists()
    assert b"PRIVATE KEY" not in response.content


def test_pkcs12_export_of_a_certificate_without_a_key_is_404(
    staff_client: Client, world: Any
) -> None:
    assert world.certificate.private_key_id is None
    response = staff_client.get(_url("certificate-pkcs12", world.certificate))
    assert response.status_code == 404


def test_no_page_about_a_hosted_certificate_shows_key_material(
    staff_client: Client, hosted_address: Address
) -> None:
    certificate = _cert(hosted_address)
    for name in ("certificate-detail", "certificate-revoke", "certificate-pkcs12"):
        content = staff_client.get(_url(name, certificate)).content
        assert b"PRIVATE KEY" not in content
    for url in (
        reverse("adminconsole:certificate-list"),
        reverse("adminconsole:domain-detail", kwargs={"pk": hosted_address.domain_id}),
        reverse("adminconsole:address-detail", kwargs={"pk": hosted_address.pk}),
        reverse("adminconsole:dashboard"),
    ):
        assert b"PRIVATE KEY" not in staff_client.get(url).content


def test_dashboard_counts_certificates_expiring_within_30_days(
    staff_client: Client, hosted: Domain
) -> None:
    ca = pkitools.make_ca("Soon CA")
    pkitools.store(
        pkitools.make_leaf(ca, "soon@clinic.example.com", days=10),
        source=Certificate.Source.HOSTED, binding=Certificate.Binding.ADDRESS,
        bound_name="soon@clinic.example.com",
    )
    Certificate.objects.filter(bound_name="soon@clinic.example.com").update(
        not_after=timezone.now() + timedelta(days=10)
    )
    response = staff_client.get(reverse("adminconsole:dashboard"))
    assert response.context["expiring_count"] == 1


def test_a_ca_key_is_never_offered_for_export(staff_client: Client, hosted: Domain) -> None:
    ca = hosted.issuing_ca
    assert ca.private_key_id is not None
    page = staff_client.get(_url("certificate-detail", ca))
    assert _url("certificate-pkcs12", ca).encode() not in page.content
    assert staff_client.get(_url("certificate-pkcs12", ca)).status_code == 404
    response = staff_client.post(
        _url("certificate-pkcs12", ca), {"passphrase": PASSPHRASE, "passphrase_again": PASSPHRASE}
    )
    assert response.status_code == 404
    assert not AuditEvent.objects.filter(action="certificate.export_pkcs12").exists()


def test_staff_imports_a_partner_certificate(staff_client: Client, sam: Any) -> None:
    partner = pkitools.make_leaf(pkitools.make_ca("Partner CA"), "zoe@partner.example.net")
    response = staff_client.post(
        reverse("adminconsole:certificate-import"),
        {"certificate": SimpleUploadedFile("zoe.pem", partner.pem)},
    )
    row = Certificate.objects.get(fingerprint_sha256=partner.fingerprint)
    assert response["Location"] == _url("certificate-detail", row)
    assert row.source == Certificate.Source.IMPORTED
    assert row.bound_name == "zoe@partner.example.net"
    assert AuditEvent.objects.get(action="certificate.import").actor == sam


def test_import_rejects_garbage_without_echoing_it(staff_client: Client) -> None:
    secret = b"-----BEGIN PRIVATE KEY-----\nTUlJQ0RVTU1Z\n-----END PRIVATE KEY-----\n"
    response = staff_client.post(
        reverse("adminconsole:certificate-import"),
        {"certificate": SimpleUploadedFile("x.pem", secret), "password": "hunter22hunter"},
    )
    assert response.status_code == 400
    assert response.context["form"].non_field_errors()
    assert b"PRIVATE KEY" not in response.content
    assert b"TUlJQ0RVTU1Z" not in response.content
    assert b"hunter22hunter" not in response.content
    assert not AuditEvent.objects.filter(action="certificate.import").exists()


def test_import_rejects_an_oversized_file(staff_client: Client) -> None:
    response = staff_client.post(
        reverse("adminconsole:certificate-import"),
        {"certificate": SimpleUploadedFile("big.pem", b"A" * (70 * 1024))},
    )
    assert response.status_code == 400
    assert "larger than" in str(response.context["form"].errors["certificate"])


def test_an_anchors_page_says_who_trusts_it_and_leads_to_stopping_that(
    staff_client: Client, world: Any
) -> None:
    # After importing an anchor, staff land on its certificate page: removing it is one click
    # away there, except where the console refuses removal (a bundle's anchor, a domain's own
    # CA), which say where they come from instead.
    anchor = world.anchor
    page = staff_client.get(_url("certificate-detail", anchor.certificate)).content.decode()
    removal = reverse("adminconsole:anchor-remove", kwargs={"pk": anchor.pk})
    assert f'href="{removal}"' in page
    assert f"{world.domain.name} (incoming and outgoing)" in page
    from_bundle = TrustAnchor.objects.create(
        certificate=anchor.certificate, domain=Domain.objects.create(name="other.example"),
        bundle=world.bundle, outgoing=False,
    )
    page = staff_client.get(_url("certificate-detail", anchor.certificate)).content.decode()
    assert "other.example (incoming, from bundle" in page
    assert reverse("adminconsole:anchor-remove", kwargs={"pk": from_bundle.pk}) not in page
    own = identity.add_domain("own.example")
    page = staff_client.get(_url("certificate-detail", own.issuing_ca)).content.decode()
    assert "own.example (incoming and outgoing, its own CA)" in page
    assert "Stop trusting" not in page
