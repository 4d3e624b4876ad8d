"""MIME on bytes: canonical line endings, header fields and multipart spans."""

from __future__ import annotations

import base64

import pytest

from agent import AgentError, Code
from agent.mime import (
    base64_blocks,
    base64_lines,
    parse_content_type,
    parse_entity,
    split_multipart,
    to_crlf,
)


def test_to_crlf_turns_bare_lf_into_crlf_and_leaves_crlf_alone() -> None:
    assert to_crlf(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    canonical = b"a\r\nb\r\n"
    assert to_crlf(canonical) is canonical


def test_parse_entity_keeps_folded_fields_byte_for_byte() -> None:
    entity = parse_entity(b"Subject: one\r\n two\r\nFrom: a@b\r\n\r\nbody")
    assert entity.headers[0].raw == b"Subject: one\r\n two\r\n"
    assert entity.get("subject") == "one two"
    assert bytes(entity.body) == b"body"


def test_parse_entity_rejects_a_line_that_is_not_a_field() -> None:
    with pytest.raises(AgentError) as caught:
        parse_entity(b"From: a@b\r\nthis is not a header\r\n\r\n")
    assert caught.value.code is Code.MALFORMED


def test_content_type_parameters_are_case_insensitive_and_unquoted() -> None:
    ct = parse_content_type(
        'Multipart/Signed; Protocol="application/pkcs7-signature"; micalg=SHA-256; boundary="a;b"'
    )
    assert ct.type == "multipart/signed"
    assert ct.param("protocol") == "application/pkcs7-signature"
    assert ct.param("boundary") == "a;b"


def test_split_multipart_returns_exact_part_spans_without_the_delimiter_crlf() -> None:
    body = b"preamble\r\n--b\r\nContent-Type: text/plain\r\n\r\none\r\n\r\n--b \r\n\r\ntwo\r\n--b--\r\nepilogue"
    spans = split_multipart(body, "b", 0, len(body))
    assert [body[s:e] for s, e in spans] == [b"Content-Type: text/plain\r\n\r\none\r\n", b"\r\ntwo"]


@pytest.mark.parametrize("body", [b"no delimiter", b"--b\r\nx\r\n", b"--bx\r\n"])
def test_split_multipart_rejects_unterminated_bodies(body: bytes) -> None:
    with pytest.raises(AgentError) as caught:
        split_multipart(body, "b", 0, len(body))
    assert caught.value.code is Code.MALFORMED


@pytest.mark.parametrize(
    "size", [0, 1, 57, 58, 57 * 32 - 1, 57 * 32, 57 * 32 + 1, 57 * 1024, 57 * 1024 + 1, 200_000]
)
def test_base64_lines_are_rfc2045_lines_of_76_characters_ending_in_crlf(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    expected = base64.encodebytes(data).replace(b"\n", b"\r\n")
    assert base64_lines(data) == expected
    assert b"".join(base64_blocks(data)) == expected
