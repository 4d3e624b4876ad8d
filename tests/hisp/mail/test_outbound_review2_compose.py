"""Outbound review: what compose and submit make of hostile or odd input. Every refusal is a
SubmissionError whose text says why (the webmail shows it, the submission port answers it,
the CLI prints it); nothing reaches the database or the wire as a 500 or a forged field."""

from __future__ import annotations

import time

import pytest

from hisp.models import Message
from hisp.services import compose
from hisp.services.compose import SubmissionError
from tests.hisp.mail.conftest import HOSTED

SENDER = f"alice@{HOSTED}"


def _build(**fields: object) -> bytes:
    values: dict[str, object] = {
        "sender": SENDER,
        "to": ["doc@partner.example.net"],
        "subject": "Referral",
        "body_text": "Please see.",
    }
    values.update(fields)
    return compose.build_message(**values)  # type: ignore[arg-type]


def _head(raw: bytes) -> list[bytes]:
    return raw.partition(b"\r\n\r\n")[0].split(b"\r\n")


# 1. Header fields built here: one line each, nothing a reader's parser takes for another field.


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"])
def test_a_subject_with_a_line_separator_is_refused_with_a_reason(char):
    # The email package ends lines at these too: it raised ValueError (a 500 in the webmail,
    # whose form lets U+2028, pasted from a word processor, through).
    with pytest.raises(SubmissionError, match="single line"):
        _build(subject=f"Referral{char}Bcc: eve@example.com")


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x0b", "\u2028"])
def test_a_sender_name_with_a_control_character_is_refused(char):
    with pytest.raises(SubmissionError, match="single line"):
        _build(sender_name=f"Dr Alice{char}X")


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f"])
def test_a_subject_with_a_control_character_is_refused(char):
    with pytest.raises(SubmissionError, match="single line"):
        _build(subject=f"Referral{char}")


def test_a_tab_in_the_subject_is_kept():
    assert b"Subject: Referral\tJ. Doe" in _head(_build(subject="Referral\tJ. Doe"))


@pytest.mark.parametrize("field", ["to", "cc"])
def test_a_recipient_with_a_line_end_is_refused_with_a_reason(field):
    with pytest.raises(SubmissionError, match="control character"):
        _build(**{field: ["doc@partner.example.net\r\nBcc: eve@example.com"]})


def test_an_attachment_name_with_control_characters_is_cleaned():
    raw = _build(attachments=[("scan\r\nX-Injected: 1\x00.pdf", "application/pdf", b"%PDF")])
    assert not any(line.startswith(b"X-Injected") for line in raw.split(b"\r\n"))
    assert b'filename="scanX-Injected: 1.pdf"' in raw


def test_an_attachment_name_of_control_characters_only_gets_a_name():
    raw = _build(attachments=[("\r\n", "text/plain", b"x")])
    assert b'filename="attachment"' in raw


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain\r\nX-Injected: 1",
        "multipart/mixed",
        "message/rfc822",
        "/plain",
        "text/",
        "te xt/plain",
        'text/plain; name="other.exe"',
        "",
        "application/pdf/x",
    ],
)
def test_an_odd_attachment_type_travels_as_octet_stream(content_type):
    raw = _build(attachments=[("scan.pdf", content_type, b"%PDF-1.7")])
    assert b"Content-Type: application/octet-stream" in raw
    assert b"X-Injected" not in raw
    assert b"other.exe" not in raw


@pytest.mark.parametrize(
    "content_type", ["application/pdf", "TEXT/Plain", "image/svg+xml", "application/vnd.ms-excel"]
)
def test_a_well_formed_attachment_type_is_kept(content_type):
    raw = _build(attachments=[("file", content_type, b"data")])
    assert f"Content-Type: {content_type.lower()}".encode() in raw


def test_an_empty_subject_and_body_are_sent_as_such(alice):
    raw = _build(subject="", body_text="")
    message = compose.submit(address=SENDER, raw=raw, actor="test", peer="test")
    assert message.subject == ""


# 2. Recipients: what could not be a Direct address (RFC 5321 4.1.2) is refused by name,
# before anything asks the database about it.

HOSTILE = [
    "doc@partner.example.net\x00",  # a NUL reached PostgreSQL: DataError, a 500
    "doc@partner.example.net> NOTIFY=NEVER",
    "<doc@partner.example.net>",
    "doc smith@partner.example.net",
    "doc..smith@partner.example.net",
    ".doc@partner.example.net",
    "doc(comment)@partner.example.net",
    "doc@@partner.example.net",
    "doc@partner@example.net",
    "doc@-partner-.example.net",
    "doc@partner..example.net",
    "doc@.partner.example.net",
    "doc@partner.example.net.",
    "doc@partner_x.example.net",
    "doc@partner.example.net,eve@example.com",
    "doc@partner.example.net;x",
    "doc@192.0.2.1",
    "x" * 65 + "@partner.example.net",
    "doc@" + "x" * 64 + ".example.net",
    "doc@" + ".".join(["x" * 60] * 5) + ".net",
]


@pytest.mark.parametrize("rcpt", HOSTILE)
def test_an_envelope_recipient_that_is_no_mailbox_is_refused(alice, rcpt):
    raw = _build()
    with pytest.raises(SubmissionError, match="not a Direct address"):
        compose.submit(address=SENDER, raw=raw, actor="test", peer="test", recipients=[rcpt])
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "rcpt",
    [
        '"doc smith"@partner.example.net',
        '"a\\"b"@partner.example.net',
        "o'brien+ref@partner.example.net",
        "doc@xn--bcher-kva.example",
        "DOC@Partner.Example.NET",
        "a!b%c@partner.example.net",
        "doc@sub-1.partner.example.net",
    ],
)
def test_a_valid_but_unusual_mailbox_is_accepted(alice, rcpt):
    message = compose.submit(
        address=SENDER, raw=_build(), actor="test", peer="test", recipients=[rcpt]
    )
    assert message.envelope_to == [rcpt]


def test_a_non_ascii_domain_is_refused_with_its_ascii_form_suggested(alice):
    with pytest.raises(SubmissionError, match="xn--"):
        compose.submit(
            address=SENDER,
            raw=_build(),
            actor="test",
            peer="test",
            recipients=["doc@bücher.example"],
        )


def test_a_message_with_two_message_ids_is_refused(alice):
    # RFC 5322 3.6: at most one. A partner's report may quote either, and tracking would wait
    # for the one it never gets.
    raw = (
        f"From: {SENDER}\r\nTo: doc@partner.example.net\r\nMessage-ID: <a@x.example>\r\n"
        "Message-ID: <b@x.example>\r\nSubject: s\r\n\r\nhi\r\n"
    ).encode()
    with pytest.raises(SubmissionError, match="Message-ID"):
        compose.submit(address=SENDER, raw=raw, actor="test", peer="test")


@pytest.mark.parametrize("field", ["To", "Cc", "Bcc", "From"])
def test_address_fields_of_many_thousand_addresses_are_refused_before_parsing(alice, field):
    # The email package's address parser slows down faster than the field grows (20,000
    # addresses took 10 to 40 s, a 25 MB message's worth would take hours): the field is
    # refused by its length, the bound the agent puts on received mail, not parsed first.
    many = ", ".join(f"r{i}@d{i}.example.org" for i in range(20000))
    fields = {"From": SENDER, "To": "doc@partner.example.net"}
    fields[field] = many if field != "From" else f"{SENDER}, {many}"
    raw = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    raw += "Subject: s\r\n\r\nhi\r\n"
    started = time.monotonic()
    with pytest.raises(SubmissionError, match="too long"):
        compose.submit(address=SENDER, raw=raw.encode(), actor="test", peer="test")
    assert time.monotonic() - started < 2
