"""Revocation answers when several rows hold one serial of our CA: the OCSP responder and the
CRL agree that the serial is revoked, once, with openssl as the oracle."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.utils import timezone

from hisp.ca import crl as crls
from hisp.ca import ocsp as responder
from hisp.certificates import load
from hisp.models import Address, Certificate
from hisp.services import pki
from tests.hisp.pki.support import openssl, write_pem


def _second_row_of(leaf: Certificate) -> Certificate:
    """Another row for the same serial of the same CA, stored after the first."""
    twin = Certificate.objects.get(pk=leaf.pk)
    twin.pk = None
    twin.fingerprint_sha256 = "f" * 64
    twin.private_key = None
    twin.save()
    return twin


def _openssl_ocsp_status(leaf: Certificate, tmp_path: Path) -> str:
    request = ocsp.OCSPRequestBuilder().add_certificate(
        load(leaf), load(leaf.issued_by), hashes.SHA1()).build()
    answer = tmp_path / "answer.der"
    answer.write_bytes(responder.respond(request.public_bytes(serialization.Encoding.DER)))
    issuer = write_pem(tmp_path / "ca.pem", leaf.issued_by)
    cert = write_pem(tmp_path / "leaf.pem", leaf)
    result = openssl("ocsp", "-issuer", str(issuer), "-cert", str(cert), "-respin", str(answer),
                     "-CAfile", str(issuer), "-no_nonce")
    assert result.returncode == 0, result.stderr
    assert "Response verify OK" in result.stderr + result.stdout
    return result.stdout


def test_ocsp_answers_revoked_when_any_row_of_the_serial_is_revoked(
    alice: Address, tmp_path: Path
) -> None:
    leaf = Certificate.objects.get(address=alice)
    twin = _second_row_of(leaf)
    assert f"{tmp_path / 'leaf.pem'}: good" in _openssl_ocsp_status(leaf, tmp_path)
    pki.revoke(twin, reason=Certificate.RevocationReason.KEY_COMPROMISE)
    out = _openssl_ocsp_status(leaf, tmp_path)
    assert f"{tmp_path / 'leaf.pem'}: revoked" in out and "keyCompromise" in out


def test_the_crl_lists_a_serial_held_by_two_revoked_rows_once_with_its_first_revocation(
    alice: Address, tmp_path: Path
) -> None:
    leaf = Certificate.objects.get(address=alice)
    twin = _second_row_of(leaf)
    first = timezone.now() - timedelta(hours=2)
    pki.revoke(twin, reason=Certificate.RevocationReason.KEY_COMPROMISE, at=first)
    pki.revoke(leaf, reason=Certificate.RevocationReason.SUPERSEDED)
    path = tmp_path / "ca.crl"
    path.write_bytes(bytes(crls.current(leaf.issued_by).der))
    ca = write_pem(tmp_path / "ca.pem", leaf.issued_by)
    result = openssl("crl", "-inform", "DER", "-in", str(path), "-noout", "-text",
                     "-CAfile", str(ca))
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stderr + result.stdout
    assert result.stdout.replace(":", "").upper().count(leaf.serial.upper()) == 1
    assert "Key Compromise" in result.stdout and "Superseded" not in result.stdout
    assert first.strftime("%b %e %H:%M:%S %Y").replace("  ", " ") in " ".join(
        result.stdout.split())
