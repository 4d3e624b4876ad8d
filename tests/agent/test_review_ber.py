"""BER shaped to cost: indefinite lengths are found only by reading everything inside, so an
envelope of millions of two-byte values must be refused quickly, while the segmented BER that
real streaming writers produce still opens."""

from __future__ import annotations

import base64
from pathlib import Path

from asn1crypto import core

from agent import unprotect
from agent.cms import der
from agent.cms.certs import issuer_and_serial
from tests.agent.conftest import Files, World
from tests.agent.openssl import cms, signed_by_alice
from tests.agent.pki import NOW
from tests.agent.refusals import refused_as_malformed

BOB = "bob@partner.test"
_DATA = core.ObjectIdentifier("1.2.840.113549.1.7.1").dump()
_ENVELOPED = core.ObjectIdentifier("1.2.840.113549.1.7.3").dump()
_AES256_CBC = core.ObjectIdentifier("2.16.840.1.101.3.4.1.42").dump()
_RSA = der.sequence(der.encode(der.OID, bytes.fromhex("2a864886f70d010101")), b"\x05\x00")


def _indefinite(tag: int, contents: bytes) -> bytes:
    return bytes((tag, 0x80)) + contents + b"\x00\x00"


def _message(world: World, encrypted_content: bytes) -> bytes:
    """An EnvelopedData for bob whose encrypted content is ``encrypted_content`` (a [0]
    constructed value, as given), all of indefinite length as streaming writers send it."""
    info = der.sequence(
        b"\x02\x01\x00", issuer_and_serial(world.bob.certificate), _RSA, der.octet_string(b"k")
    )
    algorithm = der.sequence(_AES256_CBC, der.octet_string(bytes(16)))
    eci = _indefinite(der.SEQUENCE, _DATA + algorithm + encrypted_content)
    envelope = _indefinite(der.SEQUENCE, b"\x02\x01\x00" + der.set_of(info) + eci)
    content_info = _indefinite(der.SEQUENCE, _ENVELOPED + _indefinite(0xA0, envelope))
    return (
        b"From: alice@hisp.test\r\nTo: bob@partner.test\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(content_info)
    )


def test_unprotect_refuses_an_envelope_of_a_million_empty_segments_quickly(world: World) -> None:
    # 2 MB of "04 00": each segment was read once per level the parser went down, then again.
    refused_as_malformed(
        _message(world, _indefinite(0xA0, b"\x04\x00" * 1_000_000)),
        world,
        because="too many elements",
    )


def test_unprotect_opens_a_streamed_envelope_of_many_segments(
    world: World, files: Files, tmp_path: Path
) -> None:
    # `openssl cms -stream` writes indefinite lengths and 4,096-byte segments.
    inner = b"Content-Type: text/plain\r\n\r\n" + b"line of text\r\n" * 150_000
    signed = signed_by_alice(files, inner, "-stream")
    raw = cms(
        "-encrypt",
        "-stream",
        "-aes256",
        "-from",
        "alice@hisp.test",
        "-to",
        BOB,
        files.bob_cert,
        data=signed,
    )
    result = unprotect(raw, recipients=[BOB], env=world.env(), at=NOW)
    assert set(result.delivered) == {BOB}
    assert result.message.count(b"line of text\r\n") == 150_000
