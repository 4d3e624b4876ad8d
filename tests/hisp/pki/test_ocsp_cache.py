"""The open OCSP responder signs as a high volume responder does (RFC 5019 / RFC 9919): one answer
per CA, serial, hash algorithm and status, reused while fresh, so a request is no longer worth a
key unwrap and an RSA signature; yet a revocation shows in the very next answer, nonces are
echoed within a per-client budget, and openssl still verifies every answer."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.test import Client
from django.utils import timezone
from django.utils.http import http_date

from hisp.ca import ocsp as responder
from hisp.certificates import load
from hisp.models import Address, Certificate
from hisp.services import pki
from tests.hisp.pki.support import openssl, write_pem

PARTNER = "192.0.2.10"
STRANGER = "198.51.100.7"


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """The row ids the responder's ``name`` is called with, recorded as it runs unchanged."""
    calls: list[int] = []
    real = getattr(responder, name)

    def counting(row: Any) -> Any:
        calls.append(row.pk)
        return real(row)

    monkeypatch.setattr(responder, name, counting)
    return calls


@pytest.fixture
def signatures(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per CA key the responder unwraps, which it does for every signature it makes."""
    return _count_calls(monkeypatch, "unwrap_private_key")


def _leaf(address: Address) -> Certificate:
    return Certificate.objects.get(address=address, binding=Certificate.Binding.ADDRESS)


def _request(leaf: Certificate, *, algorithm: hashes.HashAlgorithm | None = None,
             nonce: bytes | None = None, serial: int | None = None) -> bytes:
    ca = load(leaf.issued_by)
    if serial is None:
        builder = ocsp.OCSPRequestBuilder().add_certificate(
            load(leaf), ca, algorithm or hashes.SHA1())
    else:
        key = ca.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.PKCS1)
        name_hash, key_hash = hashes.Hash(hashes.SHA1()), hashes.Hash(hashes.SHA1())
        name_hash.update(ca.subject.public_bytes())
        key_hash.update(key)
        builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            name_hash.finalize(), key_hash.finalize(), serial, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _post(der: bytes, client: str = PARTNER) -> bytes:
    response = Client(REMOTE_ADDR=client).post(
        "/pki/ocsp", der, content_type="application/ocsp-request")
    assert response.status_code == 200
    return response.content


def _get(der: bytes, client: str = PARTNER) -> Any:
    response = Client(REMOTE_ADDR=client).get(f"/pki/ocsp/{base64.b64encode(der).decode()}")
    assert response.status_code == 200
    return response


def _nonce_of(der: bytes) -> bytes | None:
    try:
        extension = ocsp.load_der_ocsp_response(der).extensions.get_extension_for_class(
            x509.OCSPNonce)
    except x509.ExtensionNotFound:
        return None
    return extension.value.nonce


def test_it_signs_an_answer_without_a_nonce_once_for_everyone(
    alice: Address, signatures: list[int]
) -> None:
    der = _request(_leaf(alice))
    first = _post(der)
    again = [_post(der), _post(der, STRANGER), _get(der).content]
    assert len(signatures) == 1
    assert again == [first, first, first]
    answer = ocsp.load_der_ocsp_response(first)
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.next_update_utc - answer.this_update_utc == responder.VALIDITY


def test_each_certid_hash_algorithm_gets_its_own_answer(
    alice: Address, signatures: list[int]
) -> None:
    leaf = _leaf(alice)
    for _ in range(2):
        sha1 = ocsp.load_der_ocsp_response(_post(_request(leaf)))
        sha256 = ocsp.load_der_ocsp_response(_post(_request(leaf, algorithm=hashes.SHA256())))
    assert len(signatures) == 2
    assert (sha1.hash_algorithm.name, sha256.hash_algorithm.name) == ("sha1", "sha256")


def test_an_answer_older_than_its_fresh_period_is_signed_again(
    alice: Address, signatures: list[int]
) -> None:
    der = _request(_leaf(alice))
    start = timezone.now()
    first = responder.respond(der, at=start)
    assert responder.respond(der, at=start + responder.FRESH_FOR - timedelta(seconds=2)) == first
    later = ocsp.load_der_ocsp_response(
        responder.respond(der, at=start + responder.FRESH_FOR + timedelta(seconds=2)))
    assert len(signatures) == 2
    assert later.this_update_utc > ocsp.load_der_ocsp_response(first).this_update_utc


def test_a_revocation_shows_in_the_very_next_answer(alice: Address) -> None:
    leaf = _leaf(alice)
    der = _request(leaf)
    assert ocsp.load_der_ocsp_response(_post(der)).certificate_status == ocsp.OCSPCertStatus.GOOD
    pki.revoke(leaf, reason=Certificate.RevocationReason.KEY_COMPROMISE)
    answer = ocsp.load_der_ocsp_response(_post(der))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.key_compromise


def test_any_change_of_status_in_the_database_shows_at_once_without_invalidation(
    alice: Address,
) -> None:
    # Written straight to the table (no service, no signal, no version bump): the answer
    # follows what the database shows, because the status is part of what the answer is kept by.
    leaf = _leaf(alice)
    der = _request(leaf)
    rows = Certificate.objects.filter(pk=leaf.pk)
    held_at = timezone.now().replace(microsecond=0)
    statuses = []
    changes = [(None, ""), (held_at, Certificate.RevocationReason.CERTIFICATE_HOLD),
               (held_at, Certificate.RevocationReason.KEY_COMPROMISE), (None, "")]
    for revoked_at, reason in changes:
        rows.update(revoked_at=revoked_at, revocation_reason=reason)
        answer = ocsp.load_der_ocsp_response(_post(der))
        statuses.append((answer.certificate_status, answer.revocation_reason))
    assert statuses == [
        (ocsp.OCSPCertStatus.GOOD, None),
        (ocsp.OCSPCertStatus.REVOKED, x509.ReasonFlags.certificate_hold),
        (ocsp.OCSPCertStatus.REVOKED, x509.ReasonFlags.key_compromise),
        (ocsp.OCSPCertStatus.GOOD, None),
    ]


def test_nonces_are_echoed_within_the_clients_budget_then_the_shared_answer_is_given(
    alice: Address, signatures: list[int]
) -> None:
    leaf = _leaf(alice)
    shared = _post(_request(leaf))
    echoed = [_nonce_of(_post(_request(leaf, nonce=bytes([n]) * 16)))
              for n in range(responder.CLIENT_BUDGET)]
    assert echoed == [bytes([n]) * 16 for n in range(responder.CLIENT_BUDGET)]
    assert len(signatures) == 1 + responder.CLIENT_BUDGET
    # Beyond the budget: the answer every client gets, without the nonce and without signing.
    assert _post(_request(leaf, nonce=b"x" * 16)) == shared
    assert len(signatures) == 1 + responder.CLIENT_BUDGET
    # Another client's budget is its own.
    assert _nonce_of(_post(_request(leaf, nonce=b"y" * 16), STRANGER)) == b"y" * 16


def test_an_ipv6_client_is_counted_by_its_slash_64(alice: Address) -> None:
    leaf = _leaf(alice)
    for n in range(responder.CLIENT_BUDGET):
        _post(_request(leaf, nonce=b"n" * 16), f"2001:db8:1:2::{n + 1:x}")
    assert _nonce_of(_post(_request(leaf, nonce=b"n" * 16), "2001:db8:1:2:ffff::1")) is None
    assert _nonce_of(_post(_request(leaf, nonce=b"n" * 16), "2001:db8:1:3::1")) == b"n" * 16


def test_serials_we_never_issued_are_answered_within_the_budget_then_try_later(
    alice: Address, signatures: list[int]
) -> None:
    leaf = _leaf(alice)
    invented = [_post(_request(leaf, serial=n)) for n in range(1, responder.CLIENT_BUDGET + 1)]
    assert {ocsp.load_der_ocsp_response(der).certificate_status for der in invented} == {
        ocsp.OCSPCertStatus.UNKNOWN}
    refused = ocsp.load_der_ocsp_response(_post(_request(leaf, serial=10**6)))
    assert refused.response_status == ocsp.OCSPResponseStatus.TRY_LATER
    assert len(signatures) == responder.CLIENT_BUDGET
    # What was answered once is answered again from the cache, and real serials always are.
    assert _post(_request(leaf, serial=1)) == invented[0]
    good = ocsp.load_der_ocsp_response(_post(_request(leaf)))
    assert good.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert len(signatures) == responder.CLIENT_BUDGET + 1


def test_get_answers_carry_the_rfc_5019_http_caching_headers(alice: Address) -> None:
    leaf = _leaf(alice)
    response = _get(_request(leaf))
    answer = ocsp.load_der_ocsp_response(response.content)
    directives = {part.strip() for part in response["Cache-Control"].split(",")}
    max_age = next(int(d.split("=")[1]) for d in directives if d.startswith("max-age="))
    assert {"public", "no-transform", "must-revalidate"} <= directives
    assert 0 < max_age <= (answer.next_update_utc - timezone.now()).total_seconds() + 1
    assert response["Last-Modified"] == http_date(answer.this_update_utc.timestamp())
    assert response["Expires"] == http_date(answer.next_update_utc.timestamp())
    assert _get(_request(leaf))["ETag"] == response["ETag"]
    pki.revoke(leaf, reason=Certificate.RevocationReason.SUPERSEDED)
    assert _get(_request(leaf))["ETag"] != response["ETag"]


@pytest.mark.parametrize("send", [
    lambda der: Client(REMOTE_ADDR=PARTNER).get(f"/pki/ocsp/{base64.b64encode(der).decode()}"),
    lambda der: Client(REMOTE_ADDR=PARTNER).post("/pki/ocsp", der,
                                                 content_type="application/ocsp-request"),
])
def test_answers_bound_to_one_request_are_not_for_http_caches(
    alice: Address, send: Callable[[bytes], Any]
) -> None:
    echoed = send(_request(_leaf(alice), nonce=b"n" * 16))
    assert _nonce_of(echoed.content) == b"n" * 16
    assert echoed["Cache-Control"] == "no-cache" and not echoed.has_header("ETag")
    malformed = send(b"\x30\x03abc")
    assert malformed["Cache-Control"] == "no-cache" and not malformed.has_header("ETag")


@pytest.mark.django_db(transaction=True)
def test_openssl_verifies_cached_and_budget_limited_answers(
    alice: Address, live_server: Any, tmp_path: Path, signatures: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leaf = _leaf(alice)
    issuer = write_pem(tmp_path / "ca.pem", leaf.issued_by)
    cert = write_pem(tmp_path / "leaf.pem", leaf)
    ask = ("ocsp", "-issuer", str(issuer), "-cert", str(cert),
           "-url", f"{live_server.url}/pki/ocsp", "-CAfile", str(issuer))
    for _ in range(2):
        result = openssl(*ask, "-no_nonce")
        assert result.returncode == 0, result.stderr
        assert "Response verify OK" in result.stderr + result.stdout
        assert f"{cert}: good" in result.stdout
    assert len(signatures) == 1
    monkeypatch.setattr(responder, "CLIENT_BUDGET", 0)
    result = openssl(*ask)  # a nonce, which openssl sends by default, past the budget
    assert result.returncode == 0, result.stderr
    assert "Response verify OK" in result.stderr + result.stdout
    assert "no nonce in response" in result.stderr + result.stdout
    assert len(signatures) == 1


def test_a_made_up_issuer_costs_no_certificate_parse_once_the_cas_are_known(
    alice: Address, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every request names an issuer; with a CA per domain, parsing and hashing every CA for each
    # one made a made-up issuer cost as many certificate parses as there are domains.
    from hisp.services import identity

    for n in range(3):
        identity.add_domain(f"clinic{n}.example.org")
    parses = _count_calls(monkeypatch, "load")
    responder._issuer_hashes.cache_clear()
    made_up = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        b"\x01" * 20, b"\x02" * 20, 7, hashes.SHA1()).build().public_bytes(
        serialization.Encoding.DER)
    first = ocsp.load_der_ocsp_response(_post(made_up))
    assert first.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert len(parses) >= 4  # each CA once: the hosted domain's and the three new ones
    parses.clear()
    for _ in range(3):
        again = ocsp.load_der_ocsp_response(_post(made_up))
        assert again.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert parses == []
    # Our own CA is still found, and parsed only to sign with.
    good = ocsp.load_der_ocsp_response(_post(_request(_leaf(alice))))
    assert good.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert len(parses) == 1
