"""A hosted CA whose certificate has no SubjectKeyIdentifier (RFC 5280 4.2.1.2 lets some older
CAs omit it): certificates it issues and the CRLs it signs still carry an AuthorityKeyIdentifier,
derived from its public key, and revoking through the console publishes a CRL openssl accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.test import Client
from django.urls import reverse

from hisp.certificates import load, row_fields
from hisp.keystore import wrap_private_key
from hisp.models import Address, AuditEvent, Certificate, Domain
from hisp.services import identity
from tests.hisp.pki.support import openssl, write_pem

WHY = {"note": "The clinician's laptop was stolen."}


def _legacy_ca(domain: Domain, *, ski: x509.SubjectKeyIdentifier | None) -> Certificate:
    """A CA made elsewhere, stored as the domain's hosted issuing CA with its key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Legacy Clinic CA")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )
    if ski is not None:
        builder = builder.add_extension(ski, critical=False)
    certificate = builder.sign(key, hashes.SHA256())
    ca = Certificate.objects.create(
        **row_fields(certificate),
        binding=Certificate.Binding.CA,
        bound_name=domain.name,
        source=Certificate.Source.HOSTED,
        domain=domain,
        private_key=wrap_private_key(key),
    )
    Domain.objects.filter(pk=domain.pk).update(issuing_ca=ca)
    return ca


@pytest.fixture
def clinic(db: None, settings: Any) -> Domain:
    settings.HISP_CA_KEY_BITS = 2048
    return identity.add_domain("clinic.example.com")


@pytest.fixture
def address(clinic: Domain) -> Address:
    return identity.add_address("dr.who@clinic.example.com", name="Dr Who")


def _issue_in_console(staff_client: Client, address: Address) -> Certificate:
    response = staff_client.post(
        reverse("adminconsole:certificate-issue"),
        {"binding": Certificate.Binding.ADDRESS, "subject": address.address},
    )
    assert response.status_code == 302, response.content[:500]
    return Certificate.objects.get(address=address, binding=Certificate.Binding.ADDRESS)


def _aki(certificate: x509.Certificate | x509.CertificateRevocationList) -> bytes | None:
    return certificate.extensions.get_extension_for_class(
        x509.AuthorityKeyIdentifier
    ).value.key_identifier


def test_revoking_under_a_ca_without_ski_publishes_a_crl_openssl_verifies(
    staff_client: Client, clinic: Domain, address: Address, tmp_path: Path
) -> None:
    ca = _legacy_ca(clinic, ski=None)
    leaf = _issue_in_console(staff_client, address)
    ca_cert = load(ca)
    # RFC 5280 4.2.1.2 method 1: the SHA-1 of the CA's subjectPublicKey.
    method_one = x509.SubjectKeyIdentifier.from_public_key(ca_cert.public_key()).digest
    assert _aki(load(leaf)) == method_one

    response = staff_client.post(
        reverse("adminconsole:certificate-revoke", kwargs={"pk": leaf.pk}),
        {"reason": "key_compromise", "confirm": "on", **WHY},
    )
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="certificate.revoke").count() == 1

    published = Client().get(reverse("pki:crl", kwargs={"ca_id": ca.pk}))
    assert published.status_code == 200
    assert _aki(x509.load_der_x509_crl(published.content)) == method_one
    (tmp_path / "ca.crl").write_bytes(published.content)
    ca_pem = write_pem(tmp_path / "ca.pem", ca)
    checked = openssl("crl", "-inform", "DER", "-in", str(tmp_path / "ca.crl"), "-noout",
                      "-CAfile", str(ca_pem), "-verify")
    assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr, checked
    crl_pem = openssl("crl", "-inform", "DER", "-in", str(tmp_path / "ca.crl")).stdout
    (tmp_path / "ca.crl.pem").write_text(crl_pem)
    verdict = openssl("verify", "-crl_check", "-CAfile", str(ca_pem), "-CRLfile",
                      str(tmp_path / "ca.crl.pem"), "-purpose", "smimesign",
                      str(write_pem(tmp_path / "leaf.pem", leaf)))
    assert "certificate revoked" in verdict.stdout + verdict.stderr, verdict


def test_a_ca_with_its_own_ski_is_named_by_that_ski_not_by_a_recomputed_one(
    staff_client: Client, clinic: Domain, address: Address
) -> None:
    # RFC 5280 4.2.1.2 allows other methods; a relying party matches the AKI to the SKI as
    # written, so a CA's own identifier must win over method 1.
    own = x509.SubjectKeyIdentifier(b"\x01\x02\x03\x04\x05\x06\x07\x08")
    ca = _legacy_ca(clinic, ski=own)
    leaf = _issue_in_console(staff_client, address)
    assert _aki(load(leaf)) == own.digest
    staff_client.post(
        reverse("adminconsole:certificate-revoke", kwargs={"pk": leaf.pk}),
        {"reason": "key_compromise", "confirm": "on", **WHY},
    )
    published = Client().get(reverse("pki:crl", kwargs={"ca_id": ca.pk}))
    assert _aki(x509.load_der_x509_crl(published.content)) == own.digest
