"""Interop with `openssl cms` (OpenSSL 3.0) in both directions, every algorithm combination."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import (
    ContentCipher,
    Digest,
    KeyTransport,
    ProtectOptions,
    protect,
    unprotect,
)
from tests.agent.conftest import Files, World
from tests.agent.openssl import cms
from tests.agent.pki import NOW, write_key, write_pem

MESSAGE = (
    b"From: Alice <alice@hisp.test>\r\n"
    b"To: bob@partner.test\r\n"
    b"Subject: Referral\r\n"
    b"Date: Mon, 01 Jun 2026 12:00:00 +0000\r\n"
    b"Message-ID: <interop-1@hisp.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Patient summary attached.\r\n"
)

OPENSSL_CIPHER = {
    ContentCipher.AES128_CBC: "-aes128",
    ContentCipher.AES256_CBC: "-aes256",
    ContentCipher.AES128_GCM: "-aes-128-gcm",
    ContentCipher.AES256_GCM: "-aes-256-gcm",
}


def _decrypt_and_verify(message: bytes, cert: Path, key: Path, files: Files) -> bytes:
    inner = cms("-decrypt", "-recip", cert, "-inkey", key, data=message)
    return cms("-verify", "-purpose", "smimesign", "-CAfile", files.anchor, data=inner)


@pytest.mark.parametrize("cipher", list(ContentCipher))
@pytest.mark.parametrize("transport", list(KeyTransport))
@pytest.mark.parametrize("digest", list(Digest))
def test_openssl_decrypts_and_verifies_what_we_protect(
    world: World, files: Files, cipher: ContentCipher, transport: KeyTransport, digest: Digest
) -> None:
    options = ProtectOptions(digest=digest, cipher=cipher, key_transport=transport)
    protected = protect(
        MESSAGE,
        sender="alice@hisp.test",
        recipients=["bob@partner.test"],
        env=world.env(),
        at=NOW,
        options=options,
    )
    assert protected.message is not None
    assert protected.encrypted_to == ("bob@partner.test",)
    signed = cms(
        "-decrypt", "-recip", files.bob_cert, "-inkey", files.bob_key, data=protected.message
    )
    assert (
        f"micalg={ {'sha256': 'sha-256', 'sha384': 'sha-384', 'sha512': 'sha-512'}[digest.value] }".replace(
            " ", ""
        ).encode()
        in signed
    )
    content = cms("-verify", "-purpose", "smimesign", "-CAfile", files.anchor, data=signed)
    assert content.replace(b"\r\n", b"\n") == (
        b"Content-Type: message/rfc822\r\n\r\n" + MESSAGE
    ).replace(b"\r\n", b"\n")


def test_openssl_decrypts_for_every_recipient_and_each_certificate(
    world: World, files: Files
) -> None:
    message = MESSAGE.replace(b"To: bob@partner.test", b"To: bob@partner.test, carol@partner.test")
    protected = protect(
        message,
        sender="alice@hisp.test",
        recipients=["bob@partner.test", "carol@partner.test"],
        env=world.env(),
        at=NOW,
    )
    assert protected.message is not None
    assert set(protected.encrypted_to) == {"bob@partner.test", "carol@partner.test"}
    for cert, key in ((files.bob_cert, files.bob_key), (files.partner_cert, files.partner_key)):
        assert b"Patient summary" in _decrypt_and_verify(protected.message, cert, key, files)


def test_openssl_verifies_a_domain_bound_signer(world: World, files: Files) -> None:
    message = MESSAGE.replace(b"alice@hisp.test", b"dora@hisp.test")
    protected = protect(
        message, sender="dora@hisp.test", recipients=["bob@partner.test"], env=world.env(), at=NOW
    )
    assert protected.message is not None
    assert protected.signer == world.hisp_domain.certificate
    assert b"Patient summary" in _decrypt_and_verify(
        protected.message, files.bob_cert, files.bob_key, files
    )


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_key_sizes_interoperate_both_ways(
    world: World, files: Files, tmp_path: Path, bits: int
) -> None:
    address = f"size{bits}@partner.test"
    cert, key = world.leaf(email=address, bits=bits, slot=10)
    if address not in world.resolver.by_address:
        world.resolver.by_address[address] = [cert]
        world.keys.add(address, world.ident(cert, key))
    else:
        cert = world.resolver.by_address[address][0]
    cert_file, key_file = write_pem(tmp_path / "r.pem", cert), write_key(tmp_path / "r.key", key)
    message = MESSAGE.replace(b"bob@partner.test", address.encode())
    protected = protect(
        message, sender="alice@hisp.test", recipients=[address], env=world.env(), at=NOW
    )
    assert protected.message is not None
    assert b"Patient summary" in _decrypt_and_verify(protected.message, cert_file, key_file, files)

    # And back: `size...` signs with its own key and encrypts to alice.
    signed = cms(
        "-sign",
        "-signer",
        cert_file,
        "-inkey",
        key_file,
        "-certfile",
        files.chain,
        data=b"Content-Type: message/rfc822\r\n\r\n"
        + message.replace(b"From: Alice <alice@hisp.test>", f"From: {address}".encode()).replace(
            f"To: {address}".encode(), b"To: alice@hisp.test"
        ),
    )
    enveloped = cms(
        "-encrypt",
        "-aes256",
        "-from",
        address,
        "-to",
        "alice@hisp.test",
        files.alice_cert,
        data=signed,
    )
    result = unprotect(enveloped, recipients=["alice@hisp.test"], env=world.env(), at=NOW)
    assert result.sender == address
    assert result.signer == cert
    assert set(result.delivered) == {"alice@hisp.test"}


def _openssl_message(
    files: Files,
    *,
    cipher: ContentCipher,
    transport: KeyTransport,
    digest: Digest,
    inner: bytes,
    recipients: list[Path],
    opaque: bool = False,
    subject: str = "Referral",
) -> bytes:
    sign_args: list[str | Path] = [
        "-sign",
        "-signer",
        files.alice_cert,
        "-inkey",
        files.alice_key,
        "-certfile",
        files.chain,
        "-md",
        digest.value,
    ]
    if opaque:
        sign_args.append("-nodetach")
    signed = cms(*sign_args, data=inner)
    encrypt_args: list[str | Path] = ["-encrypt", OPENSSL_CIPHER[cipher]]
    for recipient in recipients:
        encrypt_args += ["-recip", recipient]
        if transport is KeyTransport.RSA_OAEP_SHA256:
            encrypt_args += ["-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"]
    encrypt_args += ["-from", "alice@hisp.test", "-to", "bob@partner.test", "-subject", subject]
    return cms(*encrypt_args, data=signed)


@pytest.mark.parametrize("cipher", list(ContentCipher))
@pytest.mark.parametrize("transport", list(KeyTransport))
@pytest.mark.parametrize("digest", list(Digest))
def test_we_accept_what_openssl_signs_and_encrypts_wrapped(
    world: World, files: Files, cipher: ContentCipher, transport: KeyTransport, digest: Digest
) -> None:
    inner = MESSAGE.replace(b"From: Alice <alice@hisp.test>", b"From: alice@hisp.test")
    raw = _openssl_message(
        files,
        cipher=cipher,
        transport=transport,
        digest=digest,
        inner=b"Content-Type: message/rfc822\r\n\r\n" + inner,
        recipients=[files.bob_cert],
    )
    result = unprotect(raw, recipients=["bob@partner.test"], env=world.env(), at=NOW)
    assert result.wrapped
    assert result.message == inner
    assert result.digest == digest.value
    assert result.sender == "alice@hisp.test"
    assert result.signer == world.alice.certificate
    assert result.delivered == {"bob@partner.test": world.root.certificate}
    assert result.rejected == {}


def test_we_accept_openssl_unwrapped_and_keep_the_outer_headers(world: World, files: Files) -> None:
    raw = _openssl_message(
        files,
        cipher=ContentCipher.AES256_CBC,
        transport=KeyTransport.RSA_PKCS1V15,
        digest=Digest.SHA256,
        inner=b"Content-Type: text/plain\r\n\r\nHello Bob\r\n",
        recipients=[files.bob_cert],
    )
    result = unprotect(raw, recipients=["bob@partner.test"], env=world.env(), at=NOW)
    assert not result.wrapped
    assert b"Subject: Referral\r\n" in result.message
    assert b"From: alice@hisp.test\r\n" in result.message
    assert result.message.endswith(b"Content-Type: text/plain\r\n\r\nHello Bob\r\n")
    assert b"pkcs7" not in result.message


def test_we_accept_openssl_opaque_signed_data(world: World, files: Files) -> None:
    inner = b"Content-Type: message/rfc822\r\n\r\n" + MESSAGE.replace(
        b"From: Alice <alice@hisp.test>", b"From: alice@hisp.test"
    )
    raw = _openssl_message(
        files,
        cipher=ContentCipher.AES128_GCM,
        transport=KeyTransport.RSA_OAEP_SHA256,
        digest=Digest.SHA512,
        inner=inner,
        recipients=[files.bob_cert],
        opaque=True,
    )
    result = unprotect(raw, recipients=["bob@partner.test"], env=world.env(), at=NOW)
    assert result.wrapped and result.digest == "sha512"
    assert b"Patient summary" in result.message


@pytest.mark.parametrize("position", [0, 1, 2])
def test_we_decrypt_with_our_recipient_info_in_any_position(
    world: World, files: Files, tmp_path: Path, position: int
) -> None:
    others = []
    for slot in (20, 21):
        cert, _key = world.leaf(email=f"other{slot}@elsewhere.test", slot=slot)
        others.append(write_pem(tmp_path / f"o{slot}.pem", cert))
    recipients = list(others)
    recipients.insert(position, files.bob_cert)
    inner = b"Content-Type: text/plain\r\n\r\nHi\r\n"
    raw = _openssl_message(
        files,
        cipher=ContentCipher.AES256_CBC,
        transport=KeyTransport.RSA_PKCS1V15,
        digest=Digest.SHA256,
        inner=inner,
        recipients=recipients,
    )
    result = unprotect(raw, recipients=["bob@partner.test"], env=world.env(), at=NOW)
    assert result.message.endswith(b"Hi\r\n")


def test_we_decrypt_subject_key_identifier_recipient_ids(world: World, files: Files) -> None:
    signed = cms(
        "-sign",
        "-signer",
        files.alice_cert,
        "-inkey",
        files.alice_key,
        "-certfile",
        files.chain,
        data=b"Content-Type: text/plain\r\n\r\nHi\r\n",
    )
    raw = cms(
        "-encrypt",
        "-aes256",
        "-keyid",
        "-from",
        "alice@hisp.test",
        "-to",
        "bob@partner.test",
        files.bob_cert,
        data=signed,
    )
    result = unprotect(raw, recipients=["bob@partner.test"], env=world.env(), at=NOW)
    assert set(result.delivered) == {"bob@partner.test"}


def test_we_decrypt_with_the_domain_key_and_a_rolled_over_key(
    world: World, files: Files, tmp_path: Path
) -> None:
    old_cert, old_key = world.leaf(email="bob@partner.test", slot=30)
    keys = type(world.keys)()
    keys.add("bob@partner.test", world.ident(world.bob.certificate, world.bob.private_key()))
    keys.add("bob@partner.test", world.ident(old_cert, old_key))
    keys.add("partner.test", world.partner_domain)
    env = world.env(keys=keys)
    for cert in (write_pem(tmp_path / "old.pem", old_cert), files.partner_cert):
        raw = _openssl_message(
            files,
            cipher=ContentCipher.AES128_CBC,
            transport=KeyTransport.RSA_PKCS1V15,
            digest=Digest.SHA256,
            inner=b"Content-Type: text/plain\r\n\r\nHi\r\n",
            recipients=[cert],
        )
        assert unprotect(raw, recipients=["bob@partner.test"], env=env, at=NOW).delivered


def test_single_use_certificates_work_both_ways(world: World, files: Files, tmp_path: Path) -> None:
    sign_cert, sign_key = world.leaf(email="erin@hisp.test", usage="sign", slot=40)
    enc_cert, enc_key = world.leaf(email="erin@hisp.test", usage="encrypt", slot=41)
    keys = type(world.keys)()
    keys.add("erin@hisp.test", world.ident(sign_cert, sign_key), decrypt=False)
    keys.add("erin@hisp.test", world.ident(enc_cert, enc_key), sign=False)
    keys.signing.update({k: v for k, v in world.keys.signing.items() if k != "erin@hisp.test"})
    resolver = type(world.resolver)(
        by_address={**world.resolver.by_address, "erin@hisp.test": [sign_cert, enc_cert]},
        by_domain=world.resolver.by_domain,
    )
    env = world.env(keys=keys, certificates=resolver)
    message = MESSAGE.replace(b"From: Alice <alice@hisp.test>", b"From: erin@hisp.test")
    protected = protect(
        message, sender="erin@hisp.test", recipients=["bob@partner.test"], env=env, at=NOW
    )
    assert protected.message is not None and protected.signer == sign_cert
    assert b"Patient summary" in _decrypt_and_verify(
        protected.message, files.bob_cert, files.bob_key, files
    )
    # Encrypting to erin uses only the encryption certificate.
    back = protect(
        MESSAGE.replace(b"To: bob@partner.test", b"To: erin@hisp.test"),
        sender="alice@hisp.test",
        recipients=["erin@hisp.test"],
        env=env,
        at=NOW,
    )
    assert back.recipient_certificates == {"erin@hisp.test": (enc_cert,)}
    assert back.message is not None
    result = unprotect(back.message, recipients=["erin@hisp.test"], env=env, at=NOW)
    assert result.delivered and result.wrapped


def _signed_and_enveloped(files: Files, *sign_options: str) -> bytes:
    signed = cms(
        "-sign",
        "-signer",
        files.alice_cert,
        "-inkey",
        files.alice_key,
        "-certfile",
        files.chain,
        *sign_options,
        data=b"Content-Type: text/plain\r\n\r\nHi\r\n",
    )
    return cms(
        "-encrypt",
        "-aes256",
        "-from",
        "alice@hisp.test",
        "-to",
        "bob@partner.test",
        files.bob_cert,
        data=signed,
    )


def test_we_accept_the_pre_standard_x_pkcs7_content_types(world: World, files: Files) -> None:
    raw = _signed_and_enveloped(files)
    raw = raw.replace(b"application/pkcs7-mime", b"application/x-pkcs7-mime")
    inner_types = unprotect(raw, recipients=["bob@partner.test"], env=world.env(), at=NOW)
    assert inner_types.delivered
    # And the detached signature labelled x-pkcs7-signature, inside a hand-made envelope.
    signed = cms(
        "-sign",
        "-signer",
        files.alice_cert,
        "-inkey",
        files.alice_key,
        "-certfile",
        files.chain,
        data=b"Content-Type: text/plain\r\n\r\nHi\r\n",
    ).replace(b"application/pkcs7-signature", b"application/x-pkcs7-signature")
    enveloped = cms("-encrypt", "-aes128", "-from", "alice@hisp.test", files.bob_cert, data=signed)
    result = unprotect(enveloped, recipients=["bob@partner.test"], env=world.env(), at=NOW)
    assert result.delivered


def test_we_accept_a_signer_named_by_subject_key_identifier(world: World, files: Files) -> None:
    raw = _signed_and_enveloped(files, "-keyid")
    result = unprotect(raw, recipients=["bob@partner.test"], env=world.env(), at=NOW)
    assert result.signer == world.alice.certificate and result.delivered


def test_we_accept_rsassa_pss_signatures(world: World, files: Files) -> None:
    raw = _signed_and_enveloped(files, "-keyopt", "rsa_padding_mode:pss")
    result = unprotect(raw, recipients=["bob@partner.test"], env=world.env(), at=NOW)
    assert result.delivered and result.digest == "sha256"
