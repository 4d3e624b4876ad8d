"""Shared pieces of MDNs (RFC 3798) and DSNs (RFC 3464): both are ``multipart/report``
(RFC 6522) with a human-readable part, a machine-readable part of header-style fields, and
optionally the original message's headers."""

from __future__ import annotations

import email
import email.policy
from email.message import Message as StdMessage
from email.utils import format_datetime

from django.utils import timezone

from agent.mime import new_boundary, to_crlf
from hisp.mailtext import printable


class ReportError(ValueError):
    """Not a well-formed MDN or DSN (the text says what is missing)."""


def field_blocks(raw: bytes, report_type: str) -> list[list[tuple[str, str]]]:
    """The field blocks of the machine-readable part of a ``multipart/report``."""
    try:
        return _field_blocks(raw, report_type)
    except RecursionError as exc:
        # The email package parses (and walks) each nested multipart or message/* part one
        # Python frame deeper: a report nested a thousand levels, a few tens of KB, exhausts the
        # stack. Found by fuzzing; without this the message failed on every attempt.
        raise ReportError("nested too deeply to read") from exc


def _field_blocks(raw: bytes, report_type: str) -> list[list[tuple[str, str]]]:
    message = email.message_from_bytes(to_crlf(raw), policy=email.policy.compat32)
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
                    blocks.append([(k, _unfold(v)) for k, v in block.items()])
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
        f"From: {header_text(sender)}",
        f"To: {header_text(to)}",
        f"Subject: {header_text(subject)}",
        f"Date: {format_datetime(timezone.now())}",
        f"Message-ID: {header_text(message_id)}",
        *(f"{name}: {header_text(value)}" for name, value in extra_headers),
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={report_type}; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        header_text(human),
        "",
        f"--{boundary}",
        f"Content-Type: {machine_type}",
        "",
    ]
    for block in machine:
        lines.extend(f"{name}: {header_text(value)}" for name, value in block)
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
