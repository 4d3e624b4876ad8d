from __future__ import annotations

import pytest

from adminconsole import certinfo
from tests.adminconsole import pkitools


@pytest.fixture(scope="module")
def ca() -> pkitools.Made:
    return pkitools.make_ca("Unit CA")


def test_load_accepts_pem_and_der_of_the_same_certificate(ca: pkitools.Made) -> None:
    assert certinfo.load(ca.pem) == certinfo.load(ca.der) == ca.certificate


def test_load_refuses_a_pem_block_that_is_not_a_certificate() -> None:
    with pytest.raises(certinfo.NotACertificate, match="not a CERTIFICATE"):
        certinfo.load(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_load_refuses_bytes_that_are_not_der() -> None:
    with pytest.raises(certinfo.NotACertificate, match="not a PEM or DER"):
        certinfo.load(b"\x30\x03\x02\x01")


def test_load_refuses_a_damaged_pem_certificate(ca: pkitools.Made) -> None:
    damaged = ca.pem.replace(b"M", b"!", 3)
    with pytest.raises(certinfo.NotACertificate):
        certinfo.load(damaged)


def test_describe_reads_sans_usages_and_fingerprint(ca: pkitools.Made) -> None:
    leaf = pkitools.make_leaf(ca, "dr.who@clinic.example.com")
    info = certinfo.describe(leaf.certificate)
    assert info.email_sans == ("dr.who@clinic.example.com",)
    assert info.dns_sans == ()
    assert info.key_usage == ("digitalSignature", "keyEncipherment")
    assert info.extended_key_usage == ("emailProtection",)
    assert not info.is_ca
    assert info.public_key == "EC secp256r1"
    assert info.fingerprint_sha256 == leaf.fingerprint
    assert info.fingerprint_colons == ":".join(
        leaf.fingerprint.upper()[i : i + 2] for i in range(0, 64, 2)
    )
    assert certinfo.describe(ca.certificate).key_usage == ("keyCertSign", "cRLSign")


def test_normalise_fingerprint_ignores_separators_and_case() -> None:
    assert certinfo.normalise_fingerprint("AB:cd ef-01\t23") == "abcdef0123"


def test_try_describe_der_reads_unparsable_rows_as_none(ca: pkitools.Made) -> None:
    assert certinfo.try_describe_der(b"junk") is None
    assert certinfo.try_describe_der(None) is None
    described = certinfo.try_describe_der(ca.der)
    assert described is not None and described.is_ca
