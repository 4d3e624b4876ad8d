"""Shared pieces of MDNs (RFC 3798) and DSNs (RFC 3464): both are ``multipart/report``
(RFC 6522) with a human-readable part, a machine-readable part of header-style fields, and
optionally the original message's headers."""

from __future__ import annotations

import email
import email.policy
import textwrap
from email.message import Message as StdMessage
from email.utils import format_datetime

from django.utils import timezone

from agent.mime import new_boundary, to_crlf
from hisp.mailtext import printable


class ReportError(ValueError):
    """Not a well-formed MDN or DSN (the text says what is missing)."""


# The email package makes a Message object of every header block in a message/delivery-status
# part: a 6 MB DSN of 100,000 empty-line-separated blocks took 226 MB to read. A report is about
# one message of ours (at most a few hundred recipients) and, in Direct, returns the original as
# base64 or headers only, so even a long one has few empty lines; the bound stops the blow-up
# before parsing, where the email package offers no hook.
MAX_EMPTY_LINES = 5_000


def _bounded(raw: bytes) -> bytes:
    crlf = to_crlf(raw)
    if crlf.count(b"\r\n\r\n") > MAX_EMPTY_LINES:
        raise ReportError(f"more than {MAX_EMPTY_LINES:,} empty lines: too many blocks to read")
    return crlf


def field_blocks(raw: bytes, report_type: str) -> list[list[tuple[str, str]]]:
    """The field blocks of the machine-readable part of a ``multipart/report``."""
    try:
        return _field_blocks(_bounded(raw), report_type)
    except RecursionError as exc:
        # The email package parses (and walks) each nested multipart or message/* part one
        # Python frame deeper: a report nested a thousand levels, a few tens of KB, exhausts the
        # stack. Found by fuzzing; without this the message failed on every attempt.
        raise ReportError("nested too deeply to read") from exc


# The optional third part of a report (RFC 6522 section 3): the original message or its header
# fields. RFC 3464 has no field for the original Message-ID; the returned headers carry it.
RETURNED_TYPES = frozenset({"text/rfc822-headers", "message/rfc822-headers", "message/rfc822"})


def returned_message_id(raw: bytes) -> str | None:
    """The Message-ID in the returned header fields or message of a report, if any."""
    try:
        message = email.message_from_bytes(_bounded(raw), policy=email.policy.compat32)
        for part in message.walk():
            if part.get_content_type() not in RETURNED_TYPES:
                continue
            payload = part.get_payload()
            returned = payload[0] if isinstance(payload, list) and payload else payload
            if isinstance(returned, str):
                returned = email.message_from_string(returned, policy=email.policy.compat32)
            if isinstance(returned, StdMessage) and returned.get("Message-ID"):
                return printable(_unfold(returned.get("Message-ID"))) or None
    except RecursionError as exc:  # as in field_blocks
        raise ReportError("nested too deeply to read") from exc
    return None


def _field_blocks(crlf: bytes, report_type: str) -> list[list[tuple[str, str]]]:
    message = email.message_from_bytes(crlf, policy=email.policy.compat32)
    if message.get_content_type() != "multipart/report":
        raise ReportError("not a multipart/report")
    if (message.get_param("report-type") or "").lower() != report_type:
        raise ReportError(f"report-type is not {report_type}")
    wanted = {
        "disposition-notification": "message/disposition-notification",
        "delivery-status": "message/delivery-status",
    }[report_type]
    for part in message.walk():
        if part.get_content_type() != wanted:
            continue
        payload = part.get_payload()
        blocks: list[list[tuple[str, str]]] = []
        if isinstance(payload, list):
            for block in payload:
                if isinstance(block, StdMessage):
                    # The name less white space before the colon (RFC 5322 4.5.3 obsolete
                    # syntax, which the text parser below accepts too).
                    fields = [(k.strip(), _unfold(v)) for k, v in block.items()]
                    rest = block.get_payload()
                    if isinstance(rest, str) and rest.strip():
                        # Fields the email package took for a body: those after a line it
                        # does not read as a field ("Action : failed"), or all of them after
                        # an empty first line.
                        fields += [f for group in _parse_text_blocks(rest) for f in group]
                    blocks.append(fields)
        elif isinstance(payload, str):
            blocks = _parse_text_blocks(payload)
        # The other HISP's words: they are matched against the database and kept in delivery
        # history and the audit log, where PostgreSQL refuses a NUL (and would fail the report
        # on every attempt); other control characters would reach logs and pages.
        blocks = [[(printable(k), printable(v)) for k, v in b] for b in blocks if b]
        if blocks:
            return blocks
    raise ReportError(f"no {wanted} part")


def _unfold(value: object) -> str:
    return " ".join(str(value).split())


def _parse_text_blocks(text: str) -> list[list[tuple[str, str]]]:
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
                current = []
        elif line[:1] in (" ", "\t") and current:
            name, value = current[-1]
            current[-1] = (name, _unfold(value + " " + line))
        elif ":" in line:
            name, _, value = line.partition(":")
            current.append((name.strip(), value.strip()))
    if current:
        blocks.append(current)
    return blocks


def first(block: list[tuple[str, str]], name: str) -> str | None:
    key = name.lower()
    for field, value in block:
        if field.lower() == key:
            return value
    return None


def strip_address_type(value: str | None) -> str | None:
    """``rfc822;alice@example.org`` -> ``alice@example.org`` (RFC 3464 section 2.3.2); the
    type is optional in the wild (the Java reference implementation leaves it out)."""
    if value is None:
        return None
    kind, sep, rest = value.partition(";")
    address = rest if sep else kind
    return address.strip().strip("<>") or None


def header_text(value: str) -> str:
    # Report fields are ASCII; a stray CR/LF would let a value inject further fields.
    return " ".join(value.replace("\r", " ").replace("\n", " ").split()).encode(
        "ascii", "replace"
    ).decode("ascii")


# RFC 5322 section 2.1.1: a line MUST be at most 998 characters and SHOULD be at most 78.
LINE = 78


def _wrap(text: str, *, first: str = "", indent: str = "") -> str:
    """``text`` after ``first`` broken at its spaces into lines of at most ``LINE`` characters,
    the later ones starting with ``indent``; a word longer than a line stays whole (a
    Message-ID may not be split), on the first line if it is the first word."""
    if len(first) + len(text) <= LINE and "\n" not in text:
        return first + text  # nearly every field: textwrap would cost more than the report
    lines = textwrap.wrap(
        text,
        LINE,
        initial_indent=first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return "\r\n".join(lines)


def _field(name: str, value: str) -> str:
    """A header field or report field, folded (RFC 5322 section 2.2.3)."""
    text = header_text(value)
    line = f"{name}: {text}"
    return line if len(line) <= LINE else _wrap(text, first=f"{name}: ", indent=" ")


def _subject(value: str) -> str:
    """The Subject, which quotes the original's: words beyond ASCII become RFC 2047
    encoded-words instead of question marks, and a long one is folded (encoded-words may split
    even a single long word)."""
    # A lone surrogate (from bytes that were not UTF-8) cannot be encoded: "?" instead.
    text = printable(" ".join(value.split())).encode("utf-8", "replace").decode("utf-8")
    if text.isascii() and len(text) <= LINE - len("Subject: ") and "=?" not in text:
        return f"Subject: {text}"  # as it would fold: the header registry costs 60 us a report
    # The header object itself: policy.fold() leaves a short value as it is, unencoded.
    header = email.policy.SMTP.header_factory("Subject", text)
    folded: str = header.fold(policy=email.policy.SMTP)
    return folded.removesuffix("\r\n")


def assemble(
    *,
    sender: str,
    to: str,
    subject: str,
    message_id: str,
    report_type: str,
    human: str,
    machine: list[list[tuple[str, str]]],
    machine_type: str,
    original_headers: bytes | None = None,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    boundary = new_boundary()
    lines = [
        _field("From", sender),
        _field("To", to),
        _subject(subject),
        f"Date: {format_datetime(timezone.now())}",
        _field("Message-ID", message_id),
        *(_field(name, value) for name, value in extra_headers),
        "MIME-Version: 1.0",
        f"Content-Type: multipart/report; report-type={report_type};",
        f' boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        _wrap(header_text(human)),
        "",
        f"--{boundary}",
        f"Content-Type: {machine_type}",
        "",
    ]
    for block in machine:
        lines.extend(_field(name, value) for name, value in block)
        lines.append("")
    text = "\r\n".join(lines) + "\r\n"
    tail = b""
    if original_headers is not None:
        tail = (
            f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n".encode("ascii")
            + to_crlf(original_headers).rstrip(b"\r\n")
            + b"\r\n\r\n"
        )
    return text.encode("ascii") + tail + f"--{boundary}--\r\n".encode("ascii")
