"""The open OCSP responder, as a partner's validator and a stranger see it: every request gets an
OCSP answer (RFC 6960 section 2.3), never a 500, and the nonce rules of RFC 9654 hold."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from django.test import Client

from hisp.certificates import load
from hisp.models import Address, Certificate
from hisp.services import identity
from tests.hisp.pki.support import openssl, write_pem


@pytest.fixture
def alice(db: None, settings: Any) -> Address:
    settings.HISP_CA_KEY_BITS = 2048  # fast CA keys; the profile is otherwise production's
    identity.add_domain("hospital.example.org")
    return identity.add_address("alice@hospital.example.org", name="Alice Adams",
                                address_cert=True)


def _leaf(address: Address) -> Certificate:
    return Certificate.objects.get(address=address, binding=Certificate.Binding.ADDRESS)


def _request(leaf: Certificate, *, algorithm: str = "sha1", serial: int | None = None,
             nonce: bytes | None = None) -> bytes:
    """An OCSPRequest built independently of ``cryptography``, which refuses to build odd ones."""
    ca = load(leaf.issued_by)
    key = ca.public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.PKCS1)
    cert_id = asn1_ocsp.CertId({
        "hash_algorithm": {"algorithm": algorithm},
        "issuer_name_hash": hashlib.new(algorithm, ca.subject.public_bytes()).digest(),
        "issuer_key_hash": hashlib.new(algorithm, key).digest(),
        "serial_number": int(leaf.serial, 16) if serial is None else serial,
    })
    tbs: dict[str, Any] = {"request_list": [{"req_cert": cert_id}]}
    if nonce is not None:
        tbs["request_extensions"] = [
            {"extn_id": "nonce", "critical": False, "extn_value": core.OctetString(nonce)}
        ]
    return asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump()


def _post(der: bytes) -> ocsp.OCSPResponse:
    response = Client(raise_request_exception=False).post(
        "/pki/ocsp", der, content_type="application/ocsp-request")
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content)


def _get(der: bytes) -> ocsp.OCSPResponse:
    encoded = base64.b64encode(der).decode()
    response = Client(raise_request_exception=False).get(f"/pki/ocsp/{encoded}")
    assert response.status_code == 200, response.status_code
    return ocsp.load_der_ocsp_response(response.content)


@pytest.mark.parametrize("algorithm", ["md5", "sha3_256"])
def test_a_certid_hashed_with_an_algorithm_we_do_not_know_is_malformed_not_a_500(
    alice: Address, algorithm: str
) -> None:
    der = _request(_leaf(alice), algorithm=algorithm)
    for answer in (_post(der), _get(der)):
        assert answer.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_negative_serial_is_malformed_not_a_500(alice: Address) -> None:
    answer = _post(_request(_leaf(alice), serial=-5))
    assert answer.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_serial_of_zero_or_of_500_octets_is_answered_unknown(alice: Address) -> None:
    for serial in (0, 2**4000):
        answer = _post(_request(_leaf(alice), serial=serial))
        assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert answer.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


def test_a_request_repeating_its_nonce_extension_is_malformed_not_a_500(alice: Address) -> None:
    request = asn1_ocsp.OCSPRequest.load(_request(_leaf(alice), nonce=b"n" * 16))
    nonce = request["tbs_request"]["request_extensions"][0]
    request["tbs_request"]["request_extensions"] = [nonce, nonce]
    der = request.dump(force=True)
    for answer in (_post(der), _get(der)):
        assert answer.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("length", [0, 129, 1000])
def test_an_empty_or_over_long_nonce_is_malformed(alice: Address, length: int) -> None:
    # RFC 9654 section 2.1: Nonce ::= OCTET STRING(SIZE(1..128)); a server MUST reject others.
    answer = _post(_request(_leaf(alice), nonce=b"n" * length))
    assert answer.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("length", [1, 32, 128])
def test_a_nonce_of_1_to_128_octets_is_echoed(alice: Address, length: int) -> None:
    answer = _post(_request(_leaf(alice), nonce=b"n" * length))
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == \
        b"n" * length


@pytest.mark.parametrize("algorithm", ["sha224", "sha256", "sha384", "sha512"])
def test_a_sha2_certid_is_answered_with_the_same_certid(alice: Address, algorithm: str) -> None:
    leaf = _leaf(alice)
    for answer in (_post(_request(leaf, algorithm=algorithm)),
                   _get(_request(leaf, algorithm=algorithm))):
        assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert answer.hash_algorithm.name == algorithm
        assert answer.serial_number == int(leaf.serial, 16)


@pytest.mark.django_db(transaction=True)
def test_openssl_ocsp_with_a_sha256_certid_verifies_our_answer(
    alice: Address, live_server: Any, tmp_path: Path
) -> None:
    leaf = _leaf(alice)
    issuer = write_pem(tmp_path / "ca.pem", leaf.issued_by)
    cert = write_pem(tmp_path / "leaf.pem", leaf)
    result = openssl("ocsp", "-sha256", "-issuer", str(issuer), "-cert", str(cert),
                     "-url", f"{live_server.url}/pki/ocsp", "-CAfile", str(issuer), "-resp_text")
    assert result.returncode == 0, result.stderr
    assert "Response verify OK" in result.stderr + result.stdout
    assert f"{cert}: good" in result.stdout
    assert "Hash Algorithm: sha256" in result.stdout
