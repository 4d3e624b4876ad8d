"""Hostile envelopes against decryption: parameters the cipher cannot take, key-transport
failures that must look like content failures, and RecipientInfos repeated to multiply the
private-key work. Envelopes are built field by field here (and by `openssl cms`) since no
well-behaved writer produces them."""

from __future__ import annotations

import base64
import os
from dataclasses import replace

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agent import AgentError, Code, unprotect
from agent import cms as agent_cms
from agent.cms import der, enveloped
from agent.cms.certs import issuer_and_serial
from agent.types import Identity
from tests.agent.conftest import Files, World
from tests.agent.openssl import cms, signed_by_alice
from tests.agent.pki import NOW, MemoryKeys

BOB = "bob@partner.test"
_DATA = core.ObjectIdentifier("1.2.840.113549.1.7.1").dump()
_ENVELOPED = core.ObjectIdentifier("1.2.840.113549.1.7.3").dump()
_AUTH_ENVELOPED = core.ObjectIdentifier("1.2.840.113549.1.9.16.1.23").dump()
_AES256_CBC = core.ObjectIdentifier("2.16.840.1.101.3.4.1.42").dump()
_AES256_GCM = core.ObjectIdentifier("2.16.840.1.101.3.4.1.46").dump()
_RSA = der.sequence(der.encode(der.OID, bytes.fromhex("2a864886f70d010101")), b"\x05\x00")


def _recipient_info(certificate: x509.Certificate, encrypted_key: bytes) -> bytes:
    return der.sequence(
        b"\x02\x01\x00", issuer_and_serial(certificate), _RSA, der.octet_string(encrypted_key)
    )


def _wrapped(certificate: x509.Certificate, cek: bytes) -> bytes:
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    return _recipient_info(certificate, key.encrypt(cek, padding.PKCS1v15()))


def _gcm(infos: list[bytes], cek: bytes, plaintext: bytes, *, nonce: bytes, icvlen: int) -> bytes:
    """AuthEnvelopedData (RFC 5083) with GCMParameters as given, whatever the content used."""
    encryptor = Cipher(algorithms.AES(cek), modes.GCM(os.urandom(12))).encryptor()
    body = encryptor.update(plaintext) + encryptor.finalize()
    params = der.sequence(der.octet_string(nonce), der.integer(icvlen))
    eci = der.sequence(_DATA, der.sequence(_AES256_GCM, params), der.encode(0x80, body))
    envelope = der.sequence(
        b"\x02\x01\x00", der.encode(der.SET, b"".join(infos)), eci, der.octet_string(encryptor.tag)
    )
    return der.sequence(_AUTH_ENVELOPED, der.encode(0xA0, envelope))


def _cbc(infos: list[bytes], cek: bytes, padded: bytes) -> bytes:
    """EnvelopedData (RFC 5652 6.1) over ``padded``, which must be whole blocks already."""
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    body = encryptor.update(padded) + encryptor.finalize()
    eci = der.sequence(
        _DATA, der.sequence(_AES256_CBC, der.octet_string(iv)), der.encode(0x80, body)
    )
    envelope = der.sequence(b"\x02\x01\x00", der.encode(der.SET, b"".join(infos)), eci)
    return der.sequence(_ENVELOPED, der.encode(0xA0, envelope))


def _message(envelope: bytes) -> bytes:
    return (
        b"From: alice@hisp.test\r\nTo: bob@partner.test\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(envelope)
    )


class _CountingKeys(MemoryKeys):
    """Bob's one identity, counting how often its private key is taken out."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.uses = 0
        key = world.bob.private_key()

        def private_key() -> rsa.RSAPrivateKey:
            self.uses += 1
            return key

        self.add(BOB, Identity(world.bob.certificate, private_key, world.bob.chain))


def _code(raw: bytes, world: World, keys: MemoryKeys | None = None) -> Code:
    env = world.env() if keys is None else replace(world.env(), keys=keys)
    with pytest.raises(AgentError) as caught:
        unprotect(raw, recipients=[BOB], env=env, at=NOW)
    return caught.value.code


def test_unprotect_rejects_a_gcm_nonce_too_short_for_the_cipher_as_malformed(world: World) -> None:
    cek = os.urandom(32)
    raw = _message(
        _gcm(
            [_wrapped(world.bob.certificate, cek)], cek, b"x", nonce=b"\x01\x02\x03\x04", icvlen=16
        )
    )
    assert _code(raw, world) is Code.MALFORMED


@pytest.mark.parametrize("nonce, icvlen", [(b"\x01" * 4, 16), (b"\x01" * 12, 13)])
def test_unprotect_refuses_bad_gcm_parameters_before_using_the_private_key(
    world: World, nonce: bytes, icvlen: int
) -> None:
    # Refused only after the unwrap, they would say MALFORMED when the key transport unwrapped
    # to a key of the right length and DECRYPTION_FAILED otherwise: a padding oracle.
    cek = os.urandom(32)
    good = _wrapped(world.bob.certificate, cek)
    junk = _recipient_info(world.bob.certificate, os.urandom(256))
    codes = set()
    for info in (good, junk):
        keys = _CountingKeys(world)
        codes.add(_code(_message(_gcm([info], cek, b"x", nonce=nonce, icvlen=icvlen)), world, keys))
        assert keys.uses == 0
    assert codes == {Code.MALFORMED}


def test_unprotect_takes_out_the_private_key_once_for_a_recipient_info_repeated_many_times(
    world: World,
) -> None:
    junk = _recipient_info(world.bob.certificate, os.urandom(256))
    keys = _CountingKeys(world)
    raw = _message(_cbc([junk] * 500, os.urandom(32), os.urandom(64)))
    assert _code(raw, world, keys) is Code.DECRYPTION_FAILED
    assert keys.uses == 1


def test_unprotect_opens_an_envelope_naming_its_recipient_twice(world: World, files: Files) -> None:
    # `openssl cms` writes one RecipientInfo per -recip given, duplicates included.
    signed = signed_by_alice(files, b"Content-Type: text/plain\r\n\r\nhello\r\n")
    raw = cms(
        "-encrypt",
        "-aes256",
        "-from",
        "alice@hisp.test",
        "-to",
        BOB,
        files.bob_cert,
        files.bob_cert,
        data=signed,
    )
    result = unprotect(raw, recipients=[BOB], env=world.env(), at=NOW)
    assert set(result.delivered) == {BOB}


def test_a_key_transport_that_does_not_unwrap_costs_the_content_decryption_too(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RFC 3218 2.3.2: without a random key to go on with, a junk key transport fails at once
    # and bad padding only after the whole content is decrypted: the time tells them apart.
    # Counted, not timed: the real content decryption runs, with a key of the right length.
    decrypted: list[int] = []
    real = enveloped._decrypt_cbc

    def counted(envelope, iv, cek):  # type: ignore[no-untyped-def]
        decrypted.append(len(cek))
        return real(envelope, iv, cek)

    monkeypatch.setattr(enveloped, "_decrypt_cbc", counted)
    cek = os.urandom(32)
    content = os.urandom(64 << 10)
    junk_key = _cbc([_recipient_info(world.bob.certificate, os.urandom(256))], cek, content)
    for _ in range(20):  # a random key's padding checks out one time in 256: never taken
        with pytest.raises(AgentError) as caught:
            agent_cms.decrypt(junk_key, identities=[world.bob])
        assert caught.value.code is Code.DECRYPTION_FAILED
    assert decrypted == [32] * 20
