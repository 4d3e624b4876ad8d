"""The shape of what protect writes (RFC 8551, RFC 1847, Direct AS 1.3), checked with openssl."""

from __future__ import annotations

import re

from agent import ContentCipher, Digest, ProtectOptions, protect, unprotect
from tests.agent.conftest import Files, World
from tests.agent.openssl import cms
from tests.agent.pki import NOW, identity

BOB = "bob@partner.test"
MESSAGE = (
    b"Received: from workstation by hisp.test\r\n"
    b"From: Alice <alice@hisp.test>\r\n"
    b"To: Bob <bob@partner.test>\r\n"
    b"Cc: carol@partner.test\r\n"
    b"Subject: Lab results for J. Doe\r\n"
    b"Date: Mon, 01 Jun 2026 12:00:00 +0000\r\n"
    b"Message-ID: <shape-1@hisp.test>\r\n"
    b"Disposition-Notification-To: alice@hisp.test\r\n"
    b"Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\r\n"
    b"X-Internal: secret routing note\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n" + b"A line of the lab report that is long enough to matter.\r\n" * 50
)


def _protect(world: World, message: bytes = MESSAGE, **options: object) -> bytes:
    result = protect(
        message,
        sender="alice@hisp.test",
        recipients=[BOB],
        env=world.env(),
        at=NOW,
        options=ProtectOptions(**options),  # type: ignore[arg-type]
    )
    assert result.message is not None
    return result.message


def _headers(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def _decrypted(message: bytes, files: Files) -> bytes:
    return cms(
        "-decrypt", "-binary", "-recip", files.bob_cert, "-inkey", files.bob_key, data=message
    )


def test_protect_keeps_only_the_envelope_headers_in_clear(world: World) -> None:
    headers = _headers(_protect(world))
    for kept in (
        b"From: Alice <alice@hisp.test>\r\n",
        b"To: Bob <bob@partner.test>\r\n",
        b"Cc: carol@partner.test\r\n",
        b"Date: Mon, 01 Jun 2026",
        b"Message-ID: <shape-1@hisp.test>",
        b"Disposition-Notification-To: alice@hisp.test",
        b"Disposition-Notification-Options: X-DIRECT",
        b"Subject: Lab results for J. Doe\r\n",
    ):
        assert kept in headers
    assert headers.count(b"MIME-Version: 1.0\r\n") == 1
    assert b"X-Internal" not in headers and b"Received" not in headers


def test_protect_replaces_the_outer_subject_when_asked(world: World, files: Files) -> None:
    message = _protect(world, neutral_subject="Secure message")
    assert b"Subject: Secure message\r\n" in _headers(message)
    assert b"Lab results" not in message
    assert b"Subject: Lab results for J. Doe" in _decrypted(message, files)


def test_protect_labels_the_envelope_as_smime(world: World) -> None:
    headers = _headers(_protect(world))
    assert (
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
        in headers
    )
    assert b"Content-Disposition: attachment; filename=smime.p7m\r\n" in headers
    gcm = _headers(_protect(world, cipher=ContentCipher.AES256_GCM))
    assert b"smime-type=authEnveloped-data" in gcm


def test_protect_writes_crlf_and_short_base64_lines_throughout(world: World, files: Files) -> None:
    message = _protect(world, message=MESSAGE.replace(b"\r\n", b"\n"))
    inner = _decrypted(message, files)
    for blob in (message, inner):
        assert blob.count(b"\n") == blob.count(b"\r\n")
    body = message.split(b"\r\n\r\n", 1)[1]
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    signature = inner.split(b"filename=smime.p7s\r\n\r\n", 1)[1]
    assert all(len(line) <= 76 for line in signature.split(b"\r\n"))


def test_protect_wraps_the_whole_message_in_a_two_part_multipart_signed(
    world: World, files: Files
) -> None:
    for digest, micalg in (
        (Digest.SHA256, b"sha-256"),
        (Digest.SHA384, b"sha-384"),
        (Digest.SHA512, b"sha-512"),
    ):
        inner = _decrypted(_protect(world, digest=digest), files)
        first = inner.split(b"\r\n", 1)[0]
        assert first.startswith(
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg='
            + micalg
        )
        boundary = re.search(rb'boundary="([^"]+)"', first)
        assert boundary is not None
        delimiter = b"--" + boundary.group(1)
        assert inner.count(delimiter + b"\r\n") == 2 and inner.count(delimiter + b"--") == 1
        part1 = inner.split(delimiter + b"\r\n")[1]
        assert part1 == b"Content-Type: message/rfc822\r\n\r\n" + MESSAGE + b"\r\n"


def test_protect_encrypts_to_every_usable_certificate_of_a_recipient(
    world: World, files: Files
) -> None:
    second, key = world.leaf(email="multi@partner.test", slot=70)
    first, first_key = world.leaf(email="multi@partner.test", slot=71)
    world.resolver.by_address["multi@partner.test"] = [first, second]
    protected = protect(
        MESSAGE.replace(b"Bob <bob@partner.test>", b"multi@partner.test"),
        sender="alice@hisp.test",
        recipients=["multi@partner.test"],
        env=world.env(),
        at=NOW,
    )
    assert protected.recipient_certificates["multi@partner.test"] == (first, second)
    assert protected.message is not None
    keys = type(world.keys)()
    for cert, k in ((first, first_key), (second, key)):
        keys.decrypting = {"multi@partner.test": [identity(cert, k)]}
        result = unprotect(
            protected.message, recipients=["multi@partner.test"], env=world.env(keys=keys), at=NOW
        )
        assert result.wrapped and b"Lab results" in result.message


def test_protect_carries_eight_bit_text_unchanged(world: World, files: Files) -> None:
    message = MESSAGE.replace(b"charset=us-ascii", b"charset=utf-8") + "Grüße\r\n".encode()
    protected = _protect(world, message=message)
    result = unprotect(protected, recipients=[BOB], env=world.env(), at=NOW)
    assert result.message == message
    assert b"Content-Transfer-Encoding: 8bit" in _decrypted(protected, files)


def test_protect_signs_with_the_address_bound_identity_first(world: World) -> None:
    result = protect(MESSAGE, sender="alice@hisp.test", recipients=[BOB], env=world.env(), at=NOW)
    assert result.signer == world.alice.certificate


def test_round_trip_returns_the_original_message_and_trust(world: World) -> None:
    result = unprotect(
        _protect(world), recipients=[BOB, "carol@partner.test"], env=world.env(), at=NOW
    )
    assert result.message == MESSAGE
    assert result.sender == "alice@hisp.test"
    assert result.chain == (world.intermediate.certificate,)
    assert set(result.delivered) == {BOB, "carol@partner.test"}
