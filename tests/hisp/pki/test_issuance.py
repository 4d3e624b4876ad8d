"""Issuance: domain and address certificates, their profile, CA scopes, openssl as the oracle."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from hisp.ca.authority import CAError, issue
from hisp.certificates import load
from hisp.models import Address, AuditEvent, Certificate, Domain, TrustAnchor
from hisp.services import identity, pki
from hisp.services.identity import IdentityError
from tests.hisp.pki.support import openssl, write_pem


def _leaf(binding: str, name: str) -> Certificate:
    return Certificate.objects.get(binding=binding, bound_name=name, superseded_by__isnull=True)


def test_domain_add_creates_ca_domain_certificate_key_and_self_anchor(provider: Domain) -> None:
    ca = provider.issuing_ca
    assert ca is not None and ca.binding == Certificate.Binding.CA and ca.private_key_id
    leaf = _leaf(Certificate.Binding.DOMAIN, provider.name)
    assert leaf.issued_by == ca and leaf.private_key_id is not None
    anchor = TrustAnchor.objects.get(domain=provider)
    assert anchor.certificate == ca and anchor.incoming and anchor.outgoing
    assert anchor.confirmed_fingerprint == ca.fingerprint_sha256
    assert AuditEvent.objects.filter(action="domain.add", object_id=str(provider.pk)).exists()


@pytest.mark.parametrize("purpose", ["smimesign", "smimeencrypt"])
def test_everything_issued_passes_openssl_verify_against_exported_anchor(
    alice: Address, provider: Domain, tmp_path: Path, purpose: str
) -> None:
    from hisp.services.trust import export_anchor

    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(export_anchor(provider.name).pem)
    leaves = [
        write_pem(tmp_path / "address.pem", _leaf(Certificate.Binding.ADDRESS, alice.address)),
        write_pem(tmp_path / "domain.pem", _leaf(Certificate.Binding.DOMAIN, provider.name)),
    ]
    result = openssl("verify", "-purpose", purpose, "-x509_strict", "-CAfile", str(anchor),
                     *map(str, leaves))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == 2


def test_address_certificate_profile(alice: Address, settings: object) -> None:
    row = _leaf(Certificate.Binding.ADDRESS, alice.address)
    cert = load(row)
    ca = load(row.issued_by)
    ext = cert.extensions
    assert cert.signature_hash_algorithm.name == "sha256"
    assert cert.public_key().key_size == 2048
    assert ext.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.RFC822Name) == [alice.address]
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.EMAIL_PROTECTION]
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    cdp = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == f"http://testserver/pki/crl/{row.issued_by_id}.crl"
    aia = {a.access_method: a.access_location.value
           for a in ext.get_extension_for_class(x509.AuthorityInformationAccess).value}
    assert aia[AuthorityInformationAccessOID.OCSP] == "http://testserver/pki/ocsp"
    assert aia[AuthorityInformationAccessOID.CA_ISSUERS] == (
        f"http://testserver/pki/ca/{row.issued_by_id}.cer")
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=547) < lifetime < timedelta(days=549)  # 18 months


def test_domain_certificate_binds_dns_name(provider: Domain) -> None:
    cert = load(_leaf(Certificate.Binding.DOMAIN, provider.name))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [provider.name]
    assert san.get_values_for_type(x509.RFC822Name) == []


def test_policy_oids_come_from_settings(provider: Domain, settings: object) -> None:
    settings.HISP_CERT_POLICY_OIDS = ["1.3.6.1.4.1.41179.0.1.2", "1.3.6.1.4.1.41179.1.3"]  # type: ignore[attr-defined]
    (row,) = pki.issue_for(provider.name)
    policies = load(row).extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == [
        "1.3.6.1.4.1.41179.0.1.2", "1.3.6.1.4.1.41179.1.3"]


def test_bad_policy_oid_setting_is_refused(provider: Domain, settings: object) -> None:
    settings.HISP_CERT_POLICY_OIDS = ["not-an-oid"]  # type: ignore[attr-defined]
    with pytest.raises(pki.PkiError, match="not an OID"):
        pki.issue_for(provider.name)


def test_key_size_is_selectable(provider: Domain) -> None:
    (row,) = pki.issue_for(provider.name, key_bits=3072)
    assert load(row).public_key().key_size == 3072
    assert row.private_key is not None and row.private_key.key_bits == 3072


def test_key_size_outside_2048_3072_4096_is_refused(provider: Domain) -> None:
    assert provider.issuing_ca is not None
    with pytest.raises(CAError, match="RSA key size"):
        issue(provider.issuing_ca, binding=Certificate.Binding.DOMAIN, name=provider.name,
              key_bits=1024)


def test_separate_signing_and_encryption_pair_each_pass_its_purpose(
    provider: Domain, tmp_path: Path
) -> None:
    identity.add_address("carol@hospital.example.org", name="Carol")
    signing, encryption = pki.issue_for("carol@hospital.example.org", separate=True)
    assert (signing.usage, encryption.usage) == ("signing", "encryption")
    assert signing.private_key_id != encryption.private_key_id
    anchor = write_pem(tmp_path / "ca.pem", provider.issuing_ca)
    sign_pem = write_pem(tmp_path / "s.pem", signing)
    enc_pem = write_pem(tmp_path / "e.pem", encryption)
    assert openssl("verify", "-purpose", "smimesign", "-CAfile", str(anchor),
                   str(sign_pem)).returncode == 0
    assert openssl("verify", "-purpose", "smimeencrypt", "-CAfile", str(anchor),
                   str(enc_pem)).returncode == 0
    usage = load(signing).extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment
    usage = load(encryption).extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_encipherment and not usage.digital_signature


def test_portal_domain_gets_a_different_ca_and_anchor(provider: Domain) -> None:
    portal = identity.add_domain("patients.example.org", portal=True)
    assert portal.kind == Domain.Kind.PATIENT_PORTAL
    assert portal.issuing_ca_id != provider.issuing_ca_id
    assert "Patient Portal" in portal.issuing_ca.subject
    assert set(TrustAnchor.objects.filter(domain=portal).values_list("certificate", flat=True)) \
        == {portal.issuing_ca_id}


def test_community_scope_shares_one_ca_per_kind(db: None, settings: object) -> None:
    settings.HISP_CA_SCOPE = "community"  # type: ignore[attr-defined]
    first = identity.add_domain("one.example.org")
    second = identity.add_domain("two.example.org")
    portal = identity.add_domain("portal.example.org", portal=True)
    assert first.issuing_ca_id == second.issuing_ca_id
    assert portal.issuing_ca_id != first.issuing_ca_id
    assert first.issuing_ca.bound_name == "community:provider"


def test_address_cert_is_issued_only_when_asked(alice: Address, bob: Address) -> None:
    assert Certificate.objects.filter(address=alice).count() == 1
    assert not Certificate.objects.filter(address=bob).exists()


def test_address_with_password_gets_an_owner_user(alice: Address, bob: Address) -> None:
    assert [u.username for u in alice.users.all()] == [alice.address]
    assert alice.users.get().check_password("a long passphrase 1")
    assert not bob.users.exists()


def test_patient_flag_sets_the_kind(db: None) -> None:
    identity.add_domain("portal.example.org", portal=True)
    row = identity.add_address("pat@portal.example.org", patient=True)
    assert row.kind == Address.Kind.PATIENT


def test_patients_and_clinicians_each_stay_on_their_kind_of_domain(provider: Domain) -> None:
    identity.add_domain("portal.example.org", portal=True)
    with pytest.raises(IdentityError, match="hospital.example.org is a provider domain"):
        identity.add_address("pat@hospital.example.org", patient=True)
    with pytest.raises(IdentityError, match="portal.example.org is a patient-portal domain"):
        identity.add_address("dr.who@portal.example.org")
    assert not Address.objects.filter(address__in=["pat@hospital.example.org",
                                                    "dr.who@portal.example.org"]).exists()


@pytest.mark.parametrize("name", ["nodot", "bad_label.example.org", "-x.example.org", ""])
def test_invalid_domain_names_are_refused(db: None, name: str) -> None:
    with pytest.raises(IdentityError, match="not a valid domain name"):
        identity.add_domain(name)


def test_duplicate_domain_is_refused(provider: Domain) -> None:
    with pytest.raises(IdentityError, match="already exists"):
        identity.add_domain("HOSPITAL.example.org.")


def test_address_on_a_domain_not_hosted_is_refused(provider: Domain) -> None:
    with pytest.raises(IdentityError, match="not hosted here"):
        identity.add_address("x@elsewhere.example.net")


def test_weak_password_is_refused_and_nothing_is_created(provider: Domain) -> None:
    with pytest.raises(IdentityError, match="password rejected"):
        identity.add_address("dave@hospital.example.org", password="short")
    assert not Address.objects.filter(address="dave@hospital.example.org").exists()


def test_ca_fingerprint_is_sha256_of_der(provider: Domain) -> None:
    ca = provider.issuing_ca
    assert ca.fingerprint_sha256 == load(ca).fingerprint(hashes.SHA256()).hex()


def test_every_kind_of_certificate_we_issue_verifies_for_both_smime_purposes(
    alice: Address, provider: Domain, tmp_path: Path, settings: object
) -> None:
    pki.renew(_leaf(Certificate.Binding.ADDRESS, alice.address))
    pki.issue_for(provider.name, key_bits=4096)
    portal = identity.add_domain("portal.example.org", portal=True)
    identity.add_address("pat@portal.example.org", patient=True, address_cert=True)
    for domain in (provider, portal):
        anchor = write_pem(tmp_path / f"{domain.name}.ca.pem", domain.issuing_ca)
        rows = Certificate.objects.filter(issued_by=domain.issuing_ca, usage="dual")
        leaves = [write_pem(tmp_path / f"{row.pk}.pem", row) for row in rows]
        assert len(leaves) >= 2
        for purpose in ("smimesign", "smimeencrypt"):
            result = openssl("verify", "-purpose", purpose, "-x509_strict", "-CAfile",
                             str(anchor), *map(str, leaves))
            assert result.returncode == 0, result.stdout + result.stderr
            assert result.stdout.count(": OK") == len(leaves)


def test_unknown_ca_scope_setting_is_an_identity_error_and_creates_nothing(
    db: None, settings: object
) -> None:
    settings.HISP_CA_SCOPE = "galaxy"  # type: ignore[attr-defined]
    with pytest.raises(IdentityError, match="HISP_CA_SCOPE"):
        identity.add_domain("scope.example.org")
    assert not Domain.objects.exists() and not Certificate.objects.exists()
