"""PKCS#12 export (an audited staff action) and certificate import, with openssl as the oracle."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from django.utils import timezone

from hisp.keystore import unwrap_private_key
from hisp.models import Address, AuditEvent, Certificate, Domain
from hisp.services import identity, pki
from tests.hisp.pki.support import openssl

PASS = "correct horse battery staple"


def _numbers(key: rsa.RSAPrivateKey) -> object:
    return key.private_numbers()


def _alice_cert(alice: Address) -> Certificate:
    return Certificate.objects.get(address=alice)


def test_pkcs12_export_opens_with_openssl_and_is_audited(alice: Address, tmp_path: Path) -> None:
    row = _alice_cert(alice)
    data = pki.export_pkcs12(row, passphrase=PASS, actor="staff-1")
    path = tmp_path / "alice.p12"
    path.write_bytes(data)
    result = openssl("pkcs12", "-in", str(path), "-passin", f"pass:{PASS}", "-nodes", "-info")
    assert result.returncode == 0, result.stderr
    assert "PBES2" in result.stderr and "AES-256-CBC" in result.stderr
    key, cert, cas = pkcs12.load_key_and_certificates(data, PASS.encode())
    assert cert is not None and cert.fingerprint(hashes.SHA256()).hex() == row.fingerprint_sha256
    assert _numbers(key) == _numbers(unwrap_private_key(row.private_key))
    assert [c.fingerprint(hashes.SHA256()).hex() for c in cas] == [
        row.issued_by.fingerprint_sha256]
    event = AuditEvent.objects.get(action="certificate.export_pkcs12")
    assert event.actor_label == "staff-1" and event.detail["fingerprint"] == row.fingerprint_sha256
    assert PASS not in str(event.detail)


def test_pkcs12_export_needs_a_real_passphrase(alice: Address) -> None:
    with pytest.raises(pki.PkiError, match="at least 10"):
        pki.export_pkcs12(_alice_cert(alice), passphrase="short", actor="staff")
    assert not AuditEvent.objects.filter(action="certificate.export_pkcs12").exists()


def test_pkcs12_export_of_a_certificate_without_key_is_refused(provider: Domain) -> None:
    partner = _partner_certificate("someone@partner.example.net")[0]
    row = pki.import_certificate(partner.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(pki.PkiError, match="no private key"):
        pki.export_pkcs12(row, passphrase=PASS, actor="staff")


def _partner_certificate(
    address: str, *, san: bool = True
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = timezone.now()
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30)))
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
    return builder.sign(key, hashes.SHA256()), key


def test_pkcs12_round_trip_export_then_import_for_a_hosted_address(
    alice: Address, provider: Domain
) -> None:
    row = _alice_cert(alice)
    data = pki.export_pkcs12(row, passphrase=PASS, actor="staff")
    key = unwrap_private_key(row.private_key)
    # The same organisation brings that certificate back (e.g. after moving HISPs).
    row.private_key = None
    Certificate.objects.filter(pk=row.pk).delete()
    imported = pki.import_certificate(data, password=PASS, actor="staff")
    assert imported.source == Certificate.Source.IMPORTED
    assert imported.address == alice and imported.binding == Certificate.Binding.ADDRESS
    assert imported.issued_by == provider.issuing_ca
    assert _numbers(unwrap_private_key(imported.private_key)) == _numbers(key)


def test_import_openssl_made_pkcs12_for_a_hosted_address(provider: Domain, tmp_path: Path) -> None:
    identity.add_address("org@hospital.example.org")
    cert, key = _partner_certificate("org@hospital.example.org")
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    made = openssl("pkcs12", "-export", "-in", str(tmp_path / "c.pem"), "-inkey",
                   str(tmp_path / "k.pem"), "-passout", f"pass:{PASS}",
                   "-out", str(tmp_path / "o.p12"))
    assert made.returncode == 0, made.stderr
    row = pki.import_certificate((tmp_path / "o.p12").read_bytes(), password=PASS)
    assert row.bound_name == "org@hospital.example.org" and row.private_key_id
    assert _numbers(unwrap_private_key(row.private_key)) == _numbers(key)


def test_import_with_wrong_pkcs12_password_is_refused(alice: Address) -> None:
    data = pki.export_pkcs12(_alice_cert(alice), passphrase=PASS, actor="staff")
    with pytest.raises(pki.PkiError, match="PKCS#12") as caught:
        pki.import_certificate(data, password="wrong password")
    assert PASS not in str(caught.value)


def test_import_with_a_key_that_does_not_match_is_refused(provider: Domain) -> None:
    identity.add_address("org@hospital.example.org")
    cert, _key = _partner_certificate("org@hospital.example.org")
    _other, other_key = _partner_certificate("x@hospital.example.org")
    key_pem = other_key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    with pytest.raises(pki.PkiError, match="does not belong") as caught:
        pki.import_certificate(cert.public_bytes(serialization.Encoding.PEM), key_data=key_pem)
    assert b"PRIVATE" not in str(caught.value).encode() and key_pem[40:80].decode() not in str(
        caught.value)


def test_import_of_a_key_for_a_name_not_hosted_is_refused(provider: Domain) -> None:
    cert, key = _partner_certificate("x@elsewhere.example.net")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with pytest.raises(pki.PkiError, match="not hosted here"):
        pki.import_certificate(cert.public_bytes(serialization.Encoding.PEM), key_data=key_pem)


def test_partner_certificate_import_without_key(provider: Domain) -> None:
    cert, _ = _partner_certificate("dr@partner.example.net")
    row = pki.import_certificate(cert.public_bytes(serialization.Encoding.DER))
    assert row.source == Certificate.Source.IMPORTED and row.private_key_id is None
    assert row.bound_name == "dr@partner.example.net"
    with pytest.raises(pki.PkiError, match="already stored"):
        pki.import_certificate(cert.public_bytes(serialization.Encoding.DER))


def test_certificate_without_direct_binding_is_refused(provider: Domain) -> None:
    cert, _ = _partner_certificate("nobody", san=False)
    with pytest.raises(pki.PkiError, match="binds no Direct address"):
        pki.import_certificate(cert.public_bytes(serialization.Encoding.PEM))


def test_import_pem_certificate_with_encrypted_key_needs_its_password(provider: Domain) -> None:
    identity.add_address("org@hospital.example.org")
    cert, key = _partner_certificate("org@hospital.example.org")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(PASS.encode()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(pki.PkiError, match="key is encrypted"):
        pki.import_certificate(cert_pem, key_data=key_pem)
    row = pki.import_certificate(cert_pem, key_data=key_pem, password=PASS)
    assert _numbers(unwrap_private_key(row.private_key)) == _numbers(key)


def test_a_ca_key_is_never_exported(provider: Domain) -> None:
    with pytest.raises(pki.PkiError, match="CA key is never exported"):
        pki.export_pkcs12(provider.issuing_ca, passphrase=PASS, actor="staff")
