"""Hostile signed layers and clear-text headers: work bounded by what a real sender writes, and
every refusal an AgentError."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent import AgentError, Code, unprotect
from agent.cms import der
from agent.cms.signed import MAX_CERTIFICATES, MAX_SIGNER_INFOS
from tests.agent.conftest import Files, World
from tests.agent.openssl import cms, signed_by_alice
from tests.agent.pki import NOW, write_key, write_pem
from tests.agent.refusals import refused_as_malformed

BOB = "bob@partner.test"
INNER = b"Content-Type: text/plain\r\n\r\nhello\r\n"


def _signers(world: World, tmp_path: Path, count: int) -> list[str | Path]:
    """`-signer`/`-inkey` arguments for ``count`` distinct certificates of alice's one key
    (`openssl cms` refuses to add the same certificate twice)."""
    args: list[str | Path] = []
    for index in range(count):
        cert, key = world.leaf(email="alice@hisp.test", slot=1)
        args += [
            "-signer",
            write_pem(tmp_path / f"alice{index}.pem", cert),
            "-inkey",
            write_key(tmp_path / f"alice{index}.key", key),
        ]
    return args


def _sealed(files: Files, signed: bytes) -> bytes:
    return cms(
        "-encrypt", "-aes256", "-from", "alice@hisp.test", "-to", BOB, files.bob_cert, data=signed
    )


def test_unprotect_accepts_a_message_with_several_valid_signers(
    world: World, files: Files, tmp_path: Path
) -> None:
    args = _signers(world, tmp_path, 2)
    signed = cms("-sign", *args, "-certfile", files.chain, data=INNER)
    result = unprotect(_sealed(files, signed), recipients=[BOB], env=world.env(), at=NOW)
    assert set(result.delivered) == {BOB}


def test_unprotect_refuses_more_signer_infos_than_any_sender_writes(
    world: World, files: Files, tmp_path: Path
) -> None:
    # Each SignerInfo costs a public-key operation (with a key size the sender picks) and, for
    # every one, the content used to be hashed again: thousands fit in a 25 MB message.
    args = _signers(world, tmp_path, MAX_SIGNER_INFOS + 1)
    signed = cms("-sign", *args, "-certfile", files.chain, data=INNER)
    with pytest.raises(AgentError) as caught:
        unprotect(_sealed(files, signed), recipients=[BOB], env=world.env(), at=NOW)
    assert caught.value.code is Code.MALFORMED


def test_unprotect_refuses_a_signature_stuffed_with_certificates_quickly(
    world: World, files: Files, tmp_path: Path
) -> None:
    # Each carried certificate is parsed and offered to path building (where a look-alike of
    # the intermediate is tried at every level): the 20,000 a 25 MB message holds cost
    # seconds. Their own signatures need not verify, so they cost the sender nothing to make.
    template = bytearray(world.intermediate.certificate.public_bytes(Encoding.DER))
    # The serial's DER contents (a leading zero included) get a new, positive first bytes.
    at = template.index(der.integer(world.intermediate.certificate.serial_number)) + 2
    look_alikes = []
    for index in range(200):
        template[at : at + 3] = b"\x11" + index.to_bytes(2, "big")
        look_alikes.append(x509.load_der_x509_certificate(bytes(template)))
    assert len(look_alikes) > MAX_CERTIFICATES
    bundle = write_pem(tmp_path / "stuffing.pem", world.intermediate.certificate, *look_alikes)
    signed = signed_by_alice(files, INNER, certfile=bundle)
    refused_as_malformed(
        _sealed(files, signed), world, because=f"more than {MAX_CERTIFICATES} certificates"
    )


def _with_from(field: bytes) -> bytes:
    return (
        b"From: " + field + b"alice@hisp.test\r\nTo: bob@partner.test\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nAAAA\r\n"
    )


@pytest.mark.parametrize("nesting", ["(" * 5000, "g:" * 5000])
def test_unprotect_rejects_a_from_field_nested_thousands_deep_as_malformed(
    world: World, nesting: str
) -> None:
    # The clear-text From is read before anything is decrypted: anyone can send this.
    refused_as_malformed(
        _with_from(nesting.encode()), world, because="an address field nests too deeply"
    )


def test_unprotect_rejects_a_from_field_of_megabytes_quickly(world: World) -> None:
    # Groups send every address through the standard parser, at about a microsecond a
    # character: a 25 MB message made of one From field held a worker for some 20 seconds.
    refused_as_malformed(
        _with_from(b"g: a@b; " * (256 * 1024)), world, because="address fields too long"
    )


def _opaque_with_a_bare_lf(files: Files) -> bytes:
    """DER signed-data (`openssl cms -nodetach`) holding a 0x0A byte not after a 0x0D, as about
    two signatures in three do somewhere in their 256 bytes."""
    for attempt in range(40):
        content = INNER + b"attempt %d\r\n" % attempt
        der_signed = signed_by_alice(files, content, "-nodetach", "-outform", "DER")
        if der_signed.count(b"\n") != der_signed.count(b"\r\n"):
            return der_signed
    raise AssertionError("no signature with a bare LF")


def test_unprotect_verifies_an_opaque_signature_sent_in_binary(world: World, files: Files) -> None:
    # RFC 8551 3.1.2: inside the envelope no transfer encoding is needed and binary MIME objects
    # must be handled; canonical line ends are for text, and would corrupt the DER.
    entity = (
        b"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + _opaque_with_a_bare_lf(files)
    )
    raw = cms(
        "-encrypt",
        "-aes256",
        "-binary",
        "-from",
        "alice@hisp.test",
        "-to",
        BOB,
        files.bob_cert,
        data=entity,
    )
    result = unprotect(raw, recipients=[BOB], env=world.env(), at=NOW)
    assert set(result.delivered) == {BOB}
    assert b"hello" in result.message
