"""A certificate whose public key this HISP cannot use (here an SM2 key, made by openssl), or
whose name does not decode, is a clear refusal or a readable page, never a server error:
before, uploading either as a partner's anchor, and opening a stored one's page, answered 500
(the key and the names were parsed without a guard)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from hisp.models import Certificate, TrustAnchor
from tests.adminconsole import pkitools


@pytest.fixture(scope="module")
def sm2_ca(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return pkitools.make_sm2_ca_pem(tmp_path_factory.mktemp("sm2"))


def test_an_anchor_with_an_unusable_key_is_refused_at_upload(
    staff_client: Client, world: Any, sm2_ca: bytes
) -> None:
    response = staff_client.post(reverse("adminconsole:anchor-import"), {
        "domain": world.domain.pk, "certificate": SimpleUploadedFile("odd.pem", sm2_ca),
        "incoming": "on", "outgoing": "on",
    })
    assert response.status_code == 400
    errors = str(response.context["form"].errors)
    assert "public key algorithm" in errors and "is not supported here" in errors


def test_the_confirmation_step_refuses_it_too(
    staff_client: Client, world: Any, sm2_ca: bytes
) -> None:
    # The hidden certificate of step two, swapped by hand for one step one would refuse.
    fingerprint = x509.load_pem_x509_certificate(sm2_ca).fingerprint(hashes.SHA256()).hex()
    response = staff_client.post(reverse("adminconsole:anchor-confirm"), {
        "domain": world.domain.pk, "certificate_pem": sm2_ca.decode("ascii"),
        "incoming": "on", "outgoing": "on", "fingerprint": fingerprint,
    })
    assert response.status_code == 400
    assert not TrustAnchor.objects.filter(certificate__subject__contains="Odd Curve").exists()


def test_a_leaf_swapped_into_the_confirmation_is_not_trusted(
    staff_client: Client, world: Any
) -> None:
    leaf = pkitools.make_leaf(pkitools.make_ca("Some CA"), "x@partner.example.net")
    response = staff_client.post(reverse("adminconsole:anchor-confirm"), {
        "domain": world.domain.pk, "certificate_pem": leaf.pem.decode("ascii"),
        "incoming": "on", "outgoing": "on", "fingerprint": leaf.fingerprint,
    })
    assert response.status_code == 400
    assert not TrustAnchor.objects.filter(certificate__fingerprint_sha256=leaf.fingerprint).exists()


def test_a_stored_certificate_with_an_unusable_key_has_a_readable_page(
    staff_client: Client, sm2_ca: bytes
) -> None:
    parsed = x509.load_pem_x509_certificate(sm2_ca)
    row = Certificate.objects.create(
        der=parsed.public_bytes(Encoding.DER), subject=parsed.subject.rfc4514_string(),
        issuer=parsed.issuer.rfc4514_string(), serial=format(parsed.serial_number, "x"),
        not_before=parsed.not_valid_before_utc, not_after=parsed.not_valid_after_utc,
        fingerprint_sha256="ab" * 32, binding=Certificate.Binding.ADDRESS,
        bound_name="odd@partner.example.net", source=Certificate.Source.DISCOVERED,
    )
    response = staff_client.get(reverse("adminconsole:certificate-detail", kwargs={"pk": row.pk}))
    assert response.status_code == 200
    assert "not supported" in response.content.decode()


def test_an_anchor_whose_name_does_not_decode_is_refused_at_upload(
    staff_client: Client, world: Any
) -> None:
    der = bytearray(pkitools.make_ca("ZZZZZZ").der)
    # The CN's UTF8String, in the issuer and the subject, made invalid UTF-8.
    at = der.find(b"\x0c\x06ZZZZZZ")
    while at != -1:
        der[at + 2] = 0xFF
        at = der.find(b"\x0c\x06ZZZZZZ", at + 1)
    response = staff_client.post(reverse("adminconsole:anchor-import"), {
        "domain": world.domain.pk, "certificate": SimpleUploadedFile("odd.der", bytes(der)),
        "incoming": "on", "outgoing": "on",
    })
    assert response.status_code == 400
    assert "Not a certificate" in str(response.context["form"].errors)
