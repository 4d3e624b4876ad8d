"""Every rejection the S/MIME layer produces, each with its own test asserting the code."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from agent import (
    AgentError,
    AlgorithmPolicy,
    Code,
    ContentCipher,
    Environment,
    KeyTransport,
    protect,
    unprotect,
)
from agent import cms as agent_cms
from tests.agent.conftest import Files, World
from tests.agent.openssl import cms
from tests.agent.pki import NOW, MemoryRevocation, make_ca, write_key, write_pem

BOB = "bob@partner.test"
INNER = (
    b"From: alice@hisp.test\r\nTo: bob@partner.test\r\nSubject: s\r\n"
    b"Message-ID: <r@hisp.test>\r\n\r\nbody\r\n"
)


def _signed(
    files: Files,
    *,
    content: bytes | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    md: str = "sha256",
    chain: bool = True,
) -> bytes:
    args: list[str | Path] = [
        "-sign",
        "-signer",
        cert or files.alice_cert,
        "-inkey",
        key or files.alice_key,
        "-md",
        md,
    ]
    if chain:
        args += ["-certfile", files.chain]
    return cms(
        *args,
        data=content if content is not None else b"Content-Type: message/rfc822\r\n\r\n" + INNER,
    )


def _seal(
    entity: bytes,
    world: World,
    *,
    outer: bytes = b"From: alice@hisp.test\r\nTo: bob@partner.test\r\n",
    cipher: ContentCipher = ContentCipher.AES256_CBC,
    to: x509.Certificate | None = None,
) -> bytes:
    """Encrypt ``entity`` to bob with our own envelope code (the layer under test is unprotect)."""
    der = agent_cms.encrypt(
        entity,
        recipients=[to or world.bob.certificate],
        cipher=cipher,
        transport=KeyTransport.RSA_PKCS1V15,
    )
    return (
        outer + b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(der)
    )


def _code(raw: bytes, env: Environment) -> Code:
    with pytest.raises(AgentError) as caught:
        unprotect(raw, recipients=[BOB], env=env, at=NOW)
    return caught.value.code


def _rejected(raw: bytes, env: Environment, *, at: object = NOW) -> AgentError:
    result = unprotect(raw, recipients=[BOB], env=env, at=at)  # type: ignore[arg-type]
    assert result.delivered == {}
    return result.rejected[BOB]


def _other_signer(world: World, tmp_path: Path, **kw: object) -> tuple[Path, Path]:
    cert, key = world.leaf(email="alice@hisp.test", **kw)  # type: ignore[arg-type]
    return write_pem(tmp_path / "s.pem", cert), write_key(tmp_path / "s.key", key)


# -- whole-message failures -------------------------------------------------------------------


def test_unprotect_rejects_plaintext_as_not_encrypted(world: World) -> None:
    assert _code(INNER, world.env()) is Code.NOT_ENCRYPTED


def test_unprotect_rejects_signed_only_multipart_as_not_encrypted(
    world: World, files: Files
) -> None:
    signed = _signed(files)
    assert (
        _code(b"From: alice@hisp.test\r\nTo: bob@partner.test\r\n" + signed, world.env())
        is Code.NOT_ENCRYPTED
    )


def test_unprotect_rejects_opaque_signed_data_outside_an_envelope(
    world: World, files: Files
) -> None:
    opaque = cms(
        "-sign", "-nodetach", "-signer", files.alice_cert, "-inkey", files.alice_key, data=INNER
    )
    assert _code(b"From: alice@hisp.test\r\n" + opaque, world.env()) is Code.NOT_ENCRYPTED


def test_unprotect_rejects_unsigned_content_as_not_signed(world: World) -> None:
    assert (
        _code(_seal(b"Content-Type: text/plain\r\n\r\nhello\r\n", world), world.env())
        is Code.NOT_SIGNED
    )


def test_unprotect_rejects_double_encryption_without_signature(world: World) -> None:
    inner = _seal(b"Content-Type: text/plain\r\n\r\nhello\r\n", world)
    body = inner.split(b"\r\n", 3)[3]  # drop From/To: keep the MIME entity
    assert _code(_seal(body, world), world.env()) is Code.NOT_SIGNED


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01garbage without headers",
        b"From: alice@hisp.test\r\nContent-Type: application/pkcs7-mime\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nMIIB",
        b"From: alice@hisp.test\r\nContent-Type: application/pkcs7-mime\r\n\r\n",
        b"From: alice@hisp.test\r\nContent-Type: application/pkcs7-mime\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nMAMGAQA=",
        b"To: bob@partner.test\r\nContent-Type: application/pkcs7-mime\r\n\r\n0",
    ],
    ids=["no-headers", "truncated-der", "empty-body", "wrong-cms-type", "no-from"],
)
def test_unprotect_rejects_garbage_as_malformed(world: World, raw: bytes) -> None:
    assert _code(raw, world.env()) is Code.MALFORMED


def test_unprotect_rejects_multipart_signed_with_three_parts(world: World, files: Files) -> None:
    signed = _signed(files)
    boundary = signed.split(b'boundary="', 1)[1].split(b'"', 1)[0]
    three = signed.replace(
        b"--" + boundary + b"--",
        b"--" + boundary + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n--" + boundary + b"--",
    )
    assert _code(_seal(three, world), world.env()) is Code.MALFORMED


def test_unprotect_rejects_mail_for_a_key_we_do_not_hold(world: World) -> None:
    stranger, _key = world.leaf(email="zed@elsewhere.test", slot=50)
    assert (
        _code(_seal(b"Content-Type: text/plain\r\n\r\nx", world, to=stranger), world.env())
        is Code.NO_DECRYPTION_KEY
    )


def test_unprotect_rejects_when_no_hosted_key_exists(world: World) -> None:
    env = world.env(keys=type(world.keys)())
    assert _code(_seal(b"Content-Type: text/plain\r\n\r\nx", world), env) is Code.NO_DECRYPTION_KEY


@pytest.mark.parametrize("cipher", [ContentCipher.AES256_CBC, ContentCipher.AES128_GCM])
def test_unprotect_reports_tampered_ciphertext_as_decryption_failed(
    world: World, files: Files, cipher: ContentCipher
) -> None:
    der = agent_cms.encrypt(
        _signed(files),
        recipients=[world.bob.certificate],
        cipher=cipher,
        transport=KeyTransport.RSA_PKCS1V15,
    )
    tampered = bytearray(der)
    # CBC: the last byte of the next-to-last block flips the padding byte; GCM: the tag's last.
    tampered[-17 if cipher is ContentCipher.AES256_CBC else -1] ^= 0x01
    raw = (
        b"From: alice@hisp.test\r\nTo: bob@partner.test\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(bytes(tampered))
    )
    assert _code(raw, world.env()) is Code.DECRYPTION_FAILED


def test_unprotect_reports_a_wrong_transport_key_as_decryption_failed(
    world: World, files: Files
) -> None:
    # A RecipientInfo that names bob (same issuer and serial) but whose key was wrapped for
    # another key: a certificate with bob's issuer and serial and someone else's key.
    other, _key = world.leaf(
        email="zed@elsewhere.test", slot=50, serial=world.bob.certificate.serial_number
    )
    assert other.issuer == world.bob.certificate.issuer
    der = agent_cms.encrypt(
        _signed(files),
        recipients=[other],
        cipher=ContentCipher.AES256_CBC,
        transport=KeyTransport.RSA_PKCS1V15,
    )
    raw = _seal(b"", world)  # headers only; replaced below
    raw = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + base64.encodebytes(der)
    assert _code(raw, world.env()) is Code.DECRYPTION_FAILED


def test_unprotect_rejects_content_changed_after_signing(world: World, files: Files) -> None:
    tampered = _signed(files).replace(b"body", b"BODY")
    assert _code(_seal(tampered, world), world.env()) is Code.BAD_SIGNATURE


def test_unprotect_rejects_a_corrupted_signature_value(world: World, files: Files) -> None:
    signed = _signed(files)
    head, _, b64 = signed.partition(b'name="smime.p7s"')
    sig_head, _, rest = b64.partition(b"\n\n")
    body, _, tail = rest.partition(b"\n\n")
    der = bytearray(base64.b64decode(body))
    der[-5] ^= 0xFF  # inside the RSA signature value, the last field
    tampered = (
        head
        + b'name="smime.p7s"'
        + sig_head
        + b"\n\n"
        + base64.encodebytes(bytes(der))
        + b"\n"
        + tail
    )
    assert _code(_seal(tampered, world), world.env()) is Code.BAD_SIGNATURE


def test_unprotect_rejects_a_signature_whose_signer_certificate_is_missing(
    world: World, files: Files
) -> None:
    signed = cms(
        "-sign",
        "-nocerts",
        "-signer",
        files.alice_cert,
        "-inkey",
        files.alice_key,
        data=b"Content-Type: message/rfc822\r\n\r\n" + INNER,
    )
    assert _code(_seal(signed, world), world.env()) is Code.BAD_SIGNATURE


@pytest.mark.parametrize("md", ["sha1", "md5"])
def test_unprotect_rejects_weak_message_digests(world: World, files: Files, md: str) -> None:
    assert _code(_seal(_signed(files, md=md), world), world.env()) is Code.WEAK_ALGORITHM


def test_sha1_digest_is_accepted_only_when_the_policy_allows_it(world: World, files: Files) -> None:
    env = world.env(policy=AlgorithmPolicy(allow_sha1_digest=True))
    result = unprotect(_seal(_signed(files, md="sha1"), world), recipients=[BOB], env=env, at=NOW)
    assert result.digest == "sha1" and result.delivered


def test_md5_digest_is_rejected_even_by_a_legacy_policy(world: World, files: Files) -> None:
    env = world.env(policy=AlgorithmPolicy(allow_sha1_digest=True, allow_sha1_certificates=True))
    assert _code(_seal(_signed(files, md="md5"), world), env) is Code.WEAK_ALGORITHM


@pytest.mark.parametrize("cipher", ["-des3", "-des", "-rc2"])
def test_unprotect_rejects_legacy_content_ciphers(world: World, files: Files, cipher: str) -> None:
    raw = cms(
        "-encrypt",
        "-provider",
        "legacy",
        "-provider",
        "default",
        cipher,
        "-from",
        "alice@hisp.test",
        "-to",
        BOB,
        files.bob_cert,
        data=_signed(files),
    )
    assert _code(raw, world.env()) is Code.WEAK_ALGORITHM


def test_unprotect_rejects_outer_headers_that_differ_from_the_signed_message(world: World) -> None:
    protected = protect(INNER, sender="alice@hisp.test", recipients=[BOB], env=world.env(), at=NOW)
    assert protected.message is not None
    raw = protected.message.replace(
        b"To: bob@partner.test", b"To: bob@partner.test, eve@partner.test", 1
    )
    assert _code(raw, world.env()) is Code.HEADER_TAMPER


def test_unprotect_rejects_an_outer_from_that_differs_from_the_signed_message(world: World) -> None:
    protected = protect(INNER, sender="alice@hisp.test", recipients=[BOB], env=world.env(), at=NOW)
    assert protected.message is not None
    raw = protected.message.replace(b"From: alice@hisp.test", b"From: dora@hisp.test", 1)
    assert _code(raw, world.env()) is Code.HEADER_TAMPER


@pytest.mark.parametrize("control", ["\x00", "\x01", "\x7f"])
def test_unprotect_rejects_a_from_address_with_a_control_character(
    world: World, control: str
) -> None:
    # Checked before anything else: a domain-bound signer would bind any local part.
    protected = protect(INNER, sender="alice@hisp.test", recipients=[BOB], env=world.env(), at=NOW)
    assert protected.message is not None
    odd = f"From: ali{control}ce@hisp.test".encode()
    raw = protected.message.replace(b"From: alice@hisp.test", odd, 1)
    with pytest.raises(AgentError) as caught:
        unprotect(raw, recipients=[BOB], env=world.env(), at=NOW)
    assert caught.value.code is Code.MALFORMED and caught.value.permanent
    assert "control character" in caught.value.detail


# -- per-recipient trust outcomes (validate_signer's codes surfaced in `rejected`) -----------


def test_unprotect_rejects_a_signer_not_bound_to_the_sender(world: World, files: Files) -> None:
    inner = INNER.replace(b"From: alice@hisp.test", b"From: mallory@hisp.test")
    raw = _seal(
        _signed(files, content=b"Content-Type: message/rfc822\r\n\r\n" + inner),
        world,
        outer=b"From: mallory@hisp.test\r\nTo: bob@partner.test\r\n",
    )
    assert _rejected(raw, world.env()).code is Code.SENDER_MISMATCH


def test_unprotect_rejects_a_signer_outside_the_anchors(
    world: World, files: Files, tmp_path: Path
) -> None:
    stranger_root = make_ca("Stranger Root", world.pool.get(2048, 60))
    cert, key = _other_signer(world, tmp_path, issuer=stranger_root, slot=61)
    raw = _seal(_signed(files, cert=cert, key=key, chain=False), world)
    assert _rejected(raw, world.env()).code is Code.UNTRUSTED_SIGNER


def test_unprotect_rejects_a_signer_with_a_weak_key(
    world: World, files: Files, tmp_path: Path
) -> None:
    cert, key = _other_signer(world, tmp_path, bits=1024, slot=0)
    raw = _seal(_signed(files, cert=cert, key=key), world)
    assert _rejected(raw, world.env()).code is Code.WEAK_KEY


def test_unprotect_rejects_an_encryption_only_signer_certificate(
    world: World, files: Files, tmp_path: Path
) -> None:
    cert, key = _other_signer(world, tmp_path, usage="encrypt", slot=62)
    raw = _seal(_signed(files, cert=cert, key=key), world)
    assert _rejected(raw, world.env()).code is Code.KEY_USAGE


def test_unprotect_rejects_an_expired_signer(world: World, files: Files) -> None:
    raw = _seal(_signed(files), world)
    assert _rejected(raw, world.env(), at=NOW + timedelta(days=400)).code is Code.SIGNER_EXPIRED


def test_unprotect_rejects_a_signer_not_yet_valid(world: World, files: Files) -> None:
    raw = _seal(_signed(files), world)
    assert (
        _rejected(raw, world.env(), at=NOW - timedelta(days=20)).code is Code.SIGNER_NOT_YET_VALID
    )


def test_unprotect_rejects_a_revoked_signer(world: World, files: Files) -> None:
    env = world.env(revocation=MemoryRevocation(revoked={world.alice.certificate.serial_number}))
    assert _rejected(_seal(_signed(files), world), env).code is Code.SIGNER_REVOKED


def test_unprotect_rejects_when_revocation_cannot_be_checked(world: World, files: Files) -> None:
    env = world.env(revocation=MemoryRevocation(unavailable=True))
    error = _rejected(_seal(_signed(files), world), env)
    assert error.code is Code.REVOCATION_UNAVAILABLE
    assert not error.permanent


def test_unprotect_decides_trust_per_recipient_domain(world: World, files: Files) -> None:
    anchors = type(world.anchors)(incoming={"partner.test": [world.root.certificate]})
    env = world.env(anchors=anchors)
    keys = world.keys
    keys.add("dave@other.test", world.bob, sign=False)
    result = unprotect(
        _seal(_signed(files), world), recipients=[BOB, "dave@other.test"], env=env, at=NOW
    )
    assert set(result.delivered) == {BOB}
    assert result.rejected["dave@other.test"].code is Code.UNTRUSTED_SIGNER


# -- outgoing ----------------------------------------------------------------------------------


def test_protect_reports_a_recipient_without_certificate(world: World) -> None:
    protected = protect(
        INNER,
        sender="alice@hisp.test",
        recipients=[BOB, "nobody@nowhere.test"],
        env=world.env(),
        at=NOW,
    )
    assert protected.encrypted_to == (BOB,)
    assert protected.rejected["nobody@nowhere.test"].code is Code.NO_RECIPIENT_CERTIFICATE
    assert (
        protected.message is not None and b"nobody" not in protected.message.split(b"\r\n\r\n")[1]
    )


def test_protect_never_sends_plaintext_when_no_recipient_is_usable(world: World) -> None:
    protected = protect(
        INNER, sender="alice@hisp.test", recipients=["nobody@nowhere.test"], env=world.env(), at=NOW
    )
    assert protected.message is None and protected.encrypted_to == ()


def test_protect_reports_an_untrusted_recipient(world: World) -> None:
    stranger_root = make_ca("Stranger Root", world.pool.get(2048, 60))
    cert, _key = world.leaf(email="zoe@partner.test", issuer=stranger_root, slot=63)
    resolver = replace(
        world.resolver, by_address={**world.resolver.by_address, "zoe@partner.test": [cert]}
    )
    resolver.by_domain = {}
    protected = protect(
        INNER,
        sender="alice@hisp.test",
        recipients=["zoe@partner.test"],
        env=world.env(certificates=resolver),
        at=NOW,
    )
    assert protected.rejected["zoe@partner.test"].code is Code.UNTRUSTED_RECIPIENT


def test_protect_refuses_a_sender_without_a_signing_key(world: World) -> None:
    ghost = INNER.replace(b"From: alice@hisp.test", b"From: ghost@unhosted.test")
    with pytest.raises(AgentError) as caught:
        protect(ghost, sender="ghost@unhosted.test", recipients=[BOB], env=world.env(), at=NOW)
    assert caught.value.code is Code.NO_SENDER_KEY


@pytest.mark.parametrize(
    "from_value",
    [
        b"mallory@hisp.test",
        b"Alice <alice@other.test>",
        b"alice@hisp.test.evil.test",
        b"alice@hisp.test, mallory@hisp.test",
    ],
)
def test_protect_refuses_a_from_address_that_is_not_the_sender(
    world: World, from_value: bytes
) -> None:
    # Signing it would vouch, with alice's certificate, for a message claiming another sender.
    forged = INNER.replace(b"alice@hisp.test", from_value, 1)
    with pytest.raises(AgentError) as caught:
        protect(forged, sender="alice@hisp.test", recipients=[BOB], env=world.env(), at=NOW)
    assert caught.value.code is Code.SENDER_MISMATCH
    assert caught.value.permanent


def test_protect_refuses_a_message_without_a_from_address(world: World) -> None:
    no_from = INNER.replace(b"From: alice@hisp.test\r\n", b"")
    with pytest.raises(AgentError) as caught:
        protect(no_from, sender="alice@hisp.test", recipients=[BOB], env=world.env(), at=NOW)
    assert caught.value.code is Code.MALFORMED


def test_protect_accepts_a_from_address_differing_only_in_case(world: World) -> None:
    shouting = INNER.replace(b"From: alice@hisp.test", b"From: Alice Smith <ALICE@Hisp.Test>")
    protected = protect(
        shouting, sender="alice@hisp.test", recipients=[BOB], env=world.env(), at=NOW
    )
    assert protected.encrypted_to == (BOB,)


def test_protect_rejects_a_message_without_headers(world: World) -> None:
    with pytest.raises(AgentError) as caught:
        protect(
            b"\r\njust a body", sender="alice@hisp.test", recipients=[BOB], env=world.env(), at=NOW
        )
    assert caught.value.code is Code.MALFORMED


def test_unprotect_rejects_a_content_type_attribute_that_differs_from_the_content(
    world: World, files: Files
) -> None:
    """RFC 5652 5.3 and 11.1: the signed contentType attribute names the type of what was
    signed; a signature made over another type's attribute (re-signed, so the signature itself
    is good) must not pass for this content."""
    signed = _signed(files)
    head, _, b64 = signed.partition(b'name="smime.p7s"')
    sig_head, _, rest = b64.partition(b"\n\n")
    body, _, tail = rest.partition(b"\n\n")
    info = asn1_cms.ContentInfo.load(base64.b64decode(body))
    signer = info["content"]["signer_infos"][0]
    attributes = []
    for attribute in signer["signed_attrs"]:
        if attribute["type"].native == "content_type":
            attribute = asn1_cms.CMSAttribute({"type": "content_type", "values": ["signed_data"]})
        attributes.append(attribute)
    signed_attrs = asn1_cms.CMSAttributes(attributes)
    signer["signed_attrs"] = signed_attrs
    signer["signature"] = world.alice.private_key().sign(
        signed_attrs.dump(force=True), padding.PKCS1v15(), hashes.SHA256()
    )
    der = info.dump(force=True)
    tampered = (
        head + b'name="smime.p7s"' + sig_head + b"\n\n" + base64.encodebytes(der) + b"\n" + tail
    )
    assert _code(_seal(tampered, world), world.env()) is Code.BAD_SIGNATURE
