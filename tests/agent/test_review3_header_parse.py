"""unprotect reads the multipart/signed header block once, and the detached signature is still
checked over the exact canonical bytes whichever line ends the sender wrote."""

from __future__ import annotations

from collections import Counter

import pytest

from agent import AgentError, Code, protect, unprotect
from agent import mime as agent_mime
from tests.agent.conftest import Files, World
from tests.agent.openssl import cms, signed_by_alice
from tests.agent.pki import NOW

BOB = "bob@partner.test"
MESSAGE = (
    b"From: Alice <alice@hisp.test>\r\n"
    b"To: Bob <bob@partner.test>\r\n"
    b"Subject: Lab results\r\n"
    b"Message-ID: <review3-parse@hisp.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n" + b"A line of the lab report.\r\n" * 20
)


def test_unprotect_parses_no_header_block_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    protected = protect(
        MESSAGE, sender="alice@hisp.test", recipients=[BOB], env=world.env(), at=NOW
    ).message
    assert protected is not None
    parsed: Counter[bytes] = Counter()
    real = agent_mime._parse_header_block

    def counting(head: bytes) -> tuple[agent_mime.Header, ...]:
        parsed[head] += 1
        return real(head)

    monkeypatch.setattr(agent_mime, "_parse_header_block", counting)
    result = unprotect(protected, recipients=[BOB], env=world.env(), at=NOW)
    assert set(result.delivered) == {BOB}
    assert any(b"multipart/signed" in head for head in parsed)
    assert [head for head, times in parsed.items() if times > 1] == []


def _sealed(files: Files, signed: bytes) -> bytes:
    return cms(
        "-encrypt", "-aes256", "-from", "alice@hisp.test", "-to", BOB, files.bob_cert, data=signed
    )


def test_a_multipart_signed_with_bare_line_ends_is_verified_on_its_canonical_form(
    world: World, files: Files
) -> None:
    # openssl writes its MIME with bare LF and signs the canonical (CRLF) content: the only
    # case in which the header block is read again, from the canonical copy.
    signed = signed_by_alice(files, MESSAGE.replace(b"\r\n", b"\n"))
    assert b"multipart/signed" in signed and b"\r\n" not in signed.split(b"\n\n", 1)[0]
    result = unprotect(_sealed(files, signed), recipients=[BOB], env=world.env(), at=NOW)
    assert set(result.delivered) == {BOB}
    assert result.message.endswith(b"A line of the lab report.\r\n" * 20)


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_a_changed_signed_part_is_refused_whichever_line_ends(
    world: World, files: Files, line_end: bytes
) -> None:
    signed = signed_by_alice(files, MESSAGE).replace(b"\r\n", b"\n").replace(b"\n", line_end)
    tampered = signed.replace(b"Lab results", b"Lab resultz", 1)
    assert tampered != signed
    with pytest.raises(AgentError) as raised:
        unprotect(_sealed(files, tampered), recipients=[BOB], env=world.env(), at=NOW)
    assert raised.value.code is Code.BAD_SIGNATURE
