"""Messages from other Direct implementations (tests/vectors/MANIFEST.md), with the outcomes the
manifest lists, including the expected rejections and their reasons."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key, pkcs12

from agent import AgentError, AlgorithmPolicy, Code, Environment, Unprotected, unprotect
from tests.agent.pki import MemoryAnchors, MemoryKeys, MemoryResolver, environment, identity

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
LEGACY = AlgorithmPolicy(allow_sha1_digest=True, allow_sha1_certificates=True)
RYAN = "ryan@securehealthemail.com"
DTS500 = "dts500@direct1.direct-test.com"
BIFF = "biff@nhind.hsgincubator.com"


def _der_cert(name: str) -> x509.Certificate:
    return x509.load_der_x509_certificate((VECTORS / name).read_bytes())


def _der_key(name: str) -> rsa.RSAPrivateKey:
    key = load_der_private_key((VECTORS / name).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _env(
    recipient: str,
    cert: x509.Certificate,
    key: rsa.RSAPrivateKey,
    anchor: x509.Certificate | None,
    policy: AlgorithmPolicy,
) -> Environment:
    keys = MemoryKeys()
    keys.add(recipient, identity(cert, key))
    domain = recipient.rpartition("@")[2]
    anchors = MemoryAnchors(incoming={domain: [anchor] if anchor else []})
    return environment(keys, MemoryResolver(), anchors, policy=policy)


def _java(name: str, policy: AlgorithmPolicy) -> Unprotected:
    env = _env(
        RYAN,
        _der_cert("java-ri/ryan.der"),
        _der_key("java-ri/ryanKey.der"),
        _der_cert("java-ri/secureHealthEmailCACert.der"),
        policy,
    )
    return unprotect(
        (VECTORS / "java-ri" / name).read_bytes(),
        recipients=[RYAN],
        env=env,
        at=datetime(2024, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize("name", ["EncryptedMessage2.txt", "EncAttachment.txt"])
def test_java_vectors_are_trusted_under_a_sha1_certificate_policy(name: str) -> None:
    result = _java(name, LEGACY)
    assert result.wrapped
    assert result.sender == "gm2552@securehealthemail.com"
    assert result.digest == "sha256"
    assert result.delivered == {RYAN: _der_cert("java-ri/secureHealthEmailCACert.der")}
    assert b"From: " in result.message and RYAN.encode() in result.message


@pytest.mark.parametrize("name", ["EncryptedMessage2.txt", "EncAttachment.txt"])
def test_java_vectors_are_rejected_by_default_for_the_sha1_certificate_signature(name: str) -> None:
    result = _java(name, AlgorithmPolicy())
    assert result.delivered == {}
    assert result.rejected[RYAN].code is Code.WEAK_ALGORITHM
    assert "SHA-1" in result.rejected[RYAN].detail


def test_java_attachment_vector_carries_the_attachment() -> None:
    assert b"Content-Disposition: attachment" in _java("EncAttachment.txt", LEGACY).message


def test_java_sha1_digest_vector_is_rejected_for_its_message_digest() -> None:
    env = _env(
        RYAN,
        _der_cert("java-ri/ryan2012.der"),
        _der_key("java-ri/ryan2012Key.der"),
        _der_cert("java-ri/secureHealthEmailCACert.der"),
        AlgorithmPolicy(),
    )
    with pytest.raises(AgentError) as caught:
        unprotect(
            (VECTORS / "java-ri/EncAttachment2.txt").read_bytes(),
            recipients=[RYAN],
            env=env,
            at=datetime(2015, 1, 1, tzinfo=UTC),
        )
    assert caught.value.code is Code.WEAK_ALGORITHM
    assert "sha1 message digest" in caught.value.detail


def _dcdt_env(policy: AlgorithmPolicy) -> Environment:
    return _env(
        DTS500,
        _der_cert("dcdt/testDecryptMail_cert.der"),
        _der_key("dcdt/testDecryptMail_key.der"),
        None,
        policy,
    )


def test_dcdt_message_decrypts_and_verifies_under_a_legacy_policy() -> None:
    result = unprotect(
        (VECTORS / "dcdt/testDecryptMail.eml").read_bytes(),
        recipients=[DTS500],
        env=_dcdt_env(LEGACY),
        at=datetime(2013, 6, 1, tzinfo=UTC),
    )
    assert result.wrapped and result.digest == "sha1"
    assert result.sender == "provider1@hisp1.provider-directories.com"
    # No anchor is configured for it and its signer key is 1024-bit: never delivered.
    assert result.delivered == {}
    assert result.rejected[DTS500].code in (Code.WEAK_KEY, Code.UNTRUSTED_SIGNER)


def test_dcdt_rc2_message_is_rejected_as_weak_algorithm() -> None:
    with pytest.raises(AgentError) as caught:
        unprotect(
            (VECTORS / "dcdt/testDecryptMail_bad.eml").read_bytes(),
            recipients=[DTS500],
            env=_dcdt_env(LEGACY),
            at=datetime(2013, 6, 1, tzinfo=UTC),
        )
    assert caught.value.code is Code.WEAK_ALGORITHM
    assert "rc2" in caught.value.detail


def _pfx(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    data = (VECTORS / "dotnet-ri/nhind_umamalga1_vm1.pfx").read_bytes()
    try:
        key, cert, _extra = pkcs12.load_key_and_certificates(data, b"passw0rd!")
    except ValueError:
        # Legacy RC2-encrypted PKCS#12 that this cryptography build cannot read: re-encode it.
        out = tmp_path / "biff.p12"
        subprocess.run(
            [
                "openssl",
                "pkcs12",
                "-legacy",
                "-in",
                str(VECTORS / "dotnet-ri/nhind_umamalga1_vm1.pfx"),
                "-passin",
                "pass:passw0rd!",
                "-export",
                "-passout",
                "pass:x",
                "-out",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
        key, cert, _extra = pkcs12.load_key_and_certificates(out.read_bytes(), b"x")
    assert isinstance(key, rsa.RSAPrivateKey) and cert is not None
    return key, cert


UMAMALGA1 = x509.load_pem_x509_certificate((VECTORS / "dotnet-ri/umamalga1.cer").read_bytes())
# The .NET vector's signer binds its domain in the subject emailAddress, not in a SAN.
DOTNET_LEGACY = AlgorithmPolicy(
    allow_sha1_digest=True, allow_sha1_certificates=True, allow_subject_email_binding=True
)


def _dotnet(tmp_path: Path, policy: AlgorithmPolicy) -> Unprotected:
    key, cert = _pfx(tmp_path)
    return unprotect(
        (VECTORS / "dotnet-ri/envelopeSignature.eml").read_bytes(),
        recipients=[BIFF],
        env=_env(BIFF, cert, key, UMAMALGA1, policy),
        at=datetime(2017, 7, 14, tzinfo=UTC),
    )


def test_dotnet_oaep_vector_is_delivered_under_the_legacy_subject_email_binding(
    tmp_path: Path,
) -> None:
    result = _dotnet(tmp_path, DOTNET_LEGACY)
    assert result.sender == "toby@redmond.hsgincubator.com"
    assert result.digest == "sha1"
    assert result.rejected == {}
    assert result.delivered == {BIFF: UMAMALGA1}
    assert result.chain == ()  # the signer is issued by the anchor directly


def test_dotnet_vector_signer_without_san_is_a_sender_mismatch_by_default(tmp_path: Path) -> None:
    # Decrypts and verifies under SHA-1, but its signer has no subjectAltName (only a subject
    # emailAddress holding the domain), so the Applicability Statement binding rule rejects it
    # even though the path to umamalga1.cer is sound.
    result = _dotnet(tmp_path, LEGACY)
    assert result.sender == "toby@redmond.hsgincubator.com"
    assert result.signer.issuer == UMAMALGA1.subject
    assert result.delivered == {}
    assert result.rejected[BIFF].code is Code.SENDER_MISMATCH


def test_dotnet_vector_under_legacy_binding_still_needs_its_anchor(tmp_path: Path) -> None:
    key, cert = _pfx(tmp_path)
    result = unprotect(
        (VECTORS / "dotnet-ri/envelopeSignature.eml").read_bytes(),
        recipients=[BIFF],
        env=_env(BIFF, cert, key, None, DOTNET_LEGACY),
        at=datetime(2017, 7, 14, tzinfo=UTC),
    )
    assert result.rejected[BIFF].code is Code.UNTRUSTED_SIGNER


def test_dotnet_vector_is_rejected_by_default_for_its_sha1_digest(tmp_path: Path) -> None:
    key, cert = _pfx(tmp_path)
    with pytest.raises(AgentError) as caught:
        unprotect(
            (VECTORS / "dotnet-ri/envelopeSignature.eml").read_bytes(),
            recipients=[BIFF],
            env=_env(BIFF, cert, key, None, AlgorithmPolicy()),
            at=datetime(2017, 7, 14, tzinfo=UTC),
        )
    assert caught.value.code is Code.WEAK_ALGORITHM
