"""Revocation: CRL generation and publication, the OCSP responder, checked with openssl."""

from __future__ import annotations

import base64
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp
from django.test import Client
from django.utils import timezone

from agent.types import RevocationStatus
from hisp.agent_env import HostedFirstRevocationChecker
from hisp.ca import crl as crls
from hisp.ca import ocsp as responder
from hisp.certificates import load
from hisp.models import Address, Certificate, CertificateRevocationList, Domain
from hisp.services import pki
from tests.hisp.pki.support import openssl, write_pem


def _address_cert(address: Address) -> Certificate:
    return Certificate.objects.get(address=address, binding=Certificate.Binding.ADDRESS)


def _ocsp_request(leaf: Certificate, *, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        load(leaf), load(leaf.issued_by), hashes.SHA1()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def test_openssl_crl_parses_our_crl_with_revoked_serial_and_reason(
    alice: Address, provider: Domain, tmp_path: Path
) -> None:
    leaf = _address_cert(alice)
    pki.revoke(leaf, reason=Certificate.RevocationReason.KEY_COMPROMISE, actor="staff")
    crl_row = crls.current(provider.issuing_ca)
    path = tmp_path / "ca.crl"
    path.write_bytes(bytes(crl_row.der))
    ca = write_pem(tmp_path / "ca.pem", provider.issuing_ca)
    result = openssl("crl", "-inform", "DER", "-in", str(path), "-noout", "-text",
                     "-CAfile", str(ca))
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stderr + result.stdout
    assert leaf.serial.upper() in result.stdout.replace(":", "").upper()
    assert "Key Compromise" in result.stdout
    assert "X509v3 CRL Number" in result.stdout


def test_revocation_regenerates_the_crl_in_the_same_transaction(alice: Address,
                                                                 provider: Domain) -> None:
    before = provider.issuing_ca.crls.count()
    leaf = pki.revoke(_address_cert(alice), reason=Certificate.RevocationReason.SUPERSEDED)
    latest = provider.issuing_ca.crls.order_by("-number").first()
    assert provider.issuing_ca.crls.count() == before + 1
    parsed = x509.load_der_x509_crl(bytes(latest.der))
    entry = parsed.get_revoked_certificate_by_serial_number(int(leaf.serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.superseded


def test_crl_is_regenerated_before_next_update(provider: Domain, settings: Any) -> None:
    ca = provider.issuing_ca
    first = crls.current(ca)
    assert crls.refresh_due() == 0
    later = first.next_update - settings.HISP_CRL_REFRESH_BEFORE + timedelta(minutes=1)
    assert crls.refresh_due(at=later) == 1
    newest = ca.crls.order_by("-number").first()
    assert newest.number == first.number + 1 and newest.next_update > first.next_update


def test_revoking_twice_is_refused(alice: Address) -> None:
    leaf = pki.revoke(_address_cert(alice))
    with pytest.raises(pki.PkiError, match="already revoked"):
        pki.revoke(leaf)


def test_unknown_revocation_reason_is_refused(alice: Address) -> None:
    with pytest.raises(pki.PkiError, match="unknown revocation reason"):
        pki.revoke(_address_cert(alice), reason="because")


def test_ocsp_answers_good_then_revoked_with_nonce(alice: Address) -> None:
    leaf = _address_cert(alice)
    answer = ocsp.load_der_ocsp_response(responder.respond(_ocsp_request(leaf, nonce=b"n" * 16)))
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.next_update_utc - answer.this_update_utc == timedelta(hours=1)
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16
    load(leaf.issued_by).public_key().verify(
        answer.signature, answer.tbs_response_bytes,
        padding.PKCS1v15(),
        answer.signature_hash_algorithm)
    pki.revoke(leaf, reason=Certificate.RevocationReason.AFFILIATION_CHANGED)
    answer = ocsp.load_der_ocsp_response(responder.respond(_ocsp_request(leaf)))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.affiliation_changed


def test_ocsp_malformed_request_gets_malformed_request_status(db: None) -> None:
    answer = ocsp.load_der_ocsp_response(responder.respond(b"\x30\x03garbage"))
    assert answer.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_ocsp_for_someone_elses_ca_is_unauthorized(alice: Address) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Other CA")])
    now = timezone.now()
    other = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(other_key.public_key()).serial_number(7)
             .not_valid_before(now).not_valid_after(now + timedelta(days=1))
             .sign(other_key, hashes.SHA256()))
    request = ocsp.OCSPRequestBuilder().add_certificate(other, other, hashes.SHA1()).build()
    answer = ocsp.load_der_ocsp_response(
        responder.respond(request.public_bytes(serialization.Encoding.DER)))
    assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_ocsp_unknown_serial_of_our_ca_is_unknown(alice: Address) -> None:
    leaf = _address_cert(alice)
    cert = load(leaf)
    request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        issuer_name_hash=_sha1(load(leaf.issued_by).subject.public_bytes()),
        issuer_key_hash=_sha1(load(leaf.issued_by).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1)),
        serial_number=cert.serial_number + 1, algorithm=hashes.SHA1(),
    ).build()
    answer = ocsp.load_der_ocsp_response(
        responder.respond(request.public_bytes(serialization.Encoding.DER)))
    assert answer.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


def _sha1(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA1())
    digest.update(data)
    return digest.finalize()


def test_pki_urls_serve_ca_certificate_crl_and_ocsp_get(alice: Address, client: Client) -> None:
    leaf = _address_cert(alice)
    ca_id = leaf.issued_by_id
    response = client.get(f"/pki/ca/{ca_id}.cer")
    assert response.status_code == 200 and response["Content-Type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(response.content) == load(leaf.issued_by)
    response = client.get(f"/pki/crl/{ca_id}.crl")
    assert response["Content-Type"] == "application/pkix-crl"
    x509.load_der_x509_crl(response.content)
    encoded = base64.b64encode(_ocsp_request(leaf)).decode()
    response = client.get(f"/pki/ocsp/{encoded}")
    assert response.status_code == 200
    assert ocsp.load_der_ocsp_response(response.content).certificate_status == \
        ocsp.OCSPCertStatus.GOOD


def test_the_ca_certificate_and_crl_answer_head_as_get_does(alice: Address,
                                                            client: Client) -> None:
    ca_id = _address_cert(alice).issued_by_id
    for url, kind in ((f"/pki/ca/{ca_id}.cer", "application/pkix-cert"),
                      (f"/pki/crl/{ca_id}.crl", "application/pkix-crl")):
        response = client.head(url)
        assert response.status_code == 200 and response["Content-Type"] == kind
        assert response.content == b""
    assert client.post(f"/pki/crl/{ca_id}.crl").status_code == 405


def test_pki_urls_404_for_unknown_ca_and_400_for_bad_ocsp(alice: Address, client: Client) -> None:
    assert client.get("/pki/crl/99999.crl").status_code == 404
    leaf = _address_cert(alice)
    # An end-entity certificate is not a CA: no CRL is published under its id.
    assert client.get(f"/pki/crl/{leaf.pk}.crl").status_code == 404
    assert client.post("/pki/ocsp", b"x", content_type="text/plain").status_code == 400
    assert client.get("/pki/ocsp/@@@").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_revocation_reaches_crl_and_openssl_ocsp_on_the_next_request(
    alice: Address, live_server: Any, tmp_path: Path
) -> None:
    leaf = _address_cert(alice)
    issuer = write_pem(tmp_path / "ca.pem", leaf.issued_by)
    cert = write_pem(tmp_path / "leaf.pem", leaf)
    url = f"{live_server.url}/pki/ocsp"

    def check() -> str:
        result = openssl("ocsp", "-issuer", str(issuer), "-cert", str(cert), "-url", url,
                         "-CAfile", str(issuer), "-resp_text")
        assert result.returncode == 0, result.stderr
        assert "Response verify OK" in result.stderr + result.stdout
        return result.stdout

    assert f"{cert}: good" in check()
    pki.revoke(leaf, reason=Certificate.RevocationReason.KEY_COMPROMISE)
    out = check()
    assert f"{cert}: revoked" in out and "keyCompromise" in out
    with urllib.request.urlopen(f"{live_server.url}/pki/crl/{leaf.issued_by_id}.crl") as response:  # noqa: S310
        crl = x509.load_der_x509_crl(response.read())
    assert crl.get_revoked_certificate_by_serial_number(int(leaf.serial, 16)) is not None


def test_hosted_revocation_checker_reads_the_database(alice: Address) -> None:
    class Unreachable:
        def status(self, *args: object) -> RevocationStatus:
            raise AssertionError("our own certificates never go over HTTP")

    checker = HostedFirstRevocationChecker(fallback=Unreachable())
    leaf = _address_cert(alice)
    now = timezone.now()
    assert checker.status(load(leaf), load(leaf.issued_by), now) == RevocationStatus.GOOD
    pki.revoke(leaf)
    assert checker.status(load(leaf), load(leaf.issued_by), timezone.now() + timedelta(seconds=1)) \
        == RevocationStatus.REVOKED
    assert CertificateRevocationList.objects.filter(issuer=leaf.issued_by).exists()
