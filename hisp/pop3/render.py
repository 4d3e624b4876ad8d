"""A stored message as a mail client retrieves it: the bytes final delivery would write.

Which bytes: inbound mail is the inner message the agent decrypted and verified
(``Message.content``), never the wire bytes; anything else is ``Message.raw`` (what a user
submitted, before protection). The webmail reads messages by the same rule
(:func:`message_bytes`, imported by ``webmail/content.py``).

What comes before them, as an MTA making final delivery writes it:

- ``Return-Path: <envelope sender>`` (RFC 5321 section 4.4; ``<>`` for the null sender);
- the ``Received`` field our listener stamped when it accepted the message
  (``Message.trace``, hisp/smtp/trace.py);
- ``Authentication-Results`` (RFC 8601) with the ``smime`` method of RFC 7281: the HISP
  verified the S/MIME signature (``smime=pass``, RFC 7281 section 3.1) and who signed it
  (``body.smime-identifier``, RFC 7281 section 3.2.1, the address or domain the signer's
  certificate is bound to, ``Message.signer``). Anything we did not verify says ``none``
  (RFC 8601 section 2.2: no authentication was performed).

An ``Authentication-Results`` field the message itself carried that names our authserv-id is
taken out (RFC 8601 section 5): inside the signature anyone may write one, and a client would
show it as ours.

Lines end in CRLF throughout (RFC 1939 section 3: a multi-line response is CRLF-terminated
lines): a bare CR or LF in stored bytes is made a CRLF, so the size LIST announces is what
RETR sends.
"""

from __future__ import annotations

import re

from django.conf import settings

from hisp.models import Message
from hisp.smtp.trace import is_plain_path

# Any line ending (CRLF, a bare CR or a bare LF) as one CRLF.
_LINE_END = re.compile(rb"\r\n|\r|\n")
# RFC 8601 section 2.2: authserv-id is a "value" (RFC 2045: a token or a quoted-string),
# after optional CFWS; comments are skipped by _AUTHSERV below.
_COMMENT = re.compile(rb"\((?:[^()\\]|\\.)*\)", re.S)
_AUTHSERV = re.compile(rb'\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;()"]+))')
# RFC 8601 section 2.2: a pvalue may be an addr-spec or a domain-name; anything else is
# written as a quoted-string.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]{1,320}")


def message_bytes(message: Message) -> bytes:
    """The bytes a hosted user reads: the verified inner message for inbound mail, else what
    was submitted."""
    if message.direction == Message.Direction.INBOUND and message.content:
        return bytes(message.content)
    return bytes(message.raw)


def authserv_id() -> str:
    # RFC 8601 section 2.5: the name of the host that did the checks.
    return str(settings.HISP_HOSTNAME)


def _pvalue(text: str) -> str:
    if _PLAIN_VALUE.fullmatch(text):
        return text
    printable = "".join(c if " " <= c <= "~" else "?" for c in text[:320])
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authentication_results(message: Message) -> bytes:
    """Our Authentication-Results field for ``message``, folded, CRLF-terminated."""
    server = authserv_id()
    verified = message.direction == Message.Direction.INBOUND and bool(message.signer)
    if not verified:
        return f"Authentication-Results: {server}; none\r\n".encode("ascii", "replace")
    return (
        f"Authentication-Results: {server};\r\n"
        f"\tsmime=pass body.smime-identifier={_pvalue(message.signer)}\r\n"
    ).encode("ascii", "replace")


def _return_path(message: Message) -> bytes:
    sender = message.envelope_from or ""
    if sender and not is_plain_path(sender):
        sender = ""  # never written by our listeners; not let through to break the field
    return f"Return-Path: <{sender}>\r\n".encode("ascii")


def _claims_our_id(value: bytes, server: bytes) -> bool:
    """Whether an Authentication-Results value starts with ``server`` as its authserv-id."""
    unfolded = _COMMENT.sub(b" ", _LINE_END.sub(b"", value))
    match = _AUTHSERV.match(unfolded)
    if match is None:
        return False
    found = match.group(1) if match.group(1) is not None else match.group(2)
    return found.strip().lower() == server.lower()


def without_our_results(data: bytes) -> bytes:
    """``data`` (CRLF lines) without the Authentication-Results fields of its header section
    that claim our authserv-id."""
    end = data.find(b"\r\n\r\n")
    head, rest = (data, b"") if end < 0 else (data[: end + 2], data[end + 2 :])
    server = authserv_id().encode("ascii", "replace")
    fields: list[list[bytes]] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1].append(line)  # a continuation line belongs to the field before it
        else:
            fields.append([line])
    kept = []
    for lines in fields:
        name, colon, value = b"".join(lines).partition(b":")
        if (
            colon
            and name.strip().lower() == b"authentication-results"
            and _claims_our_id(value, server)
        ):
            continue
        kept.extend(lines)
    return b"".join(kept) + rest


def _crlf(data: bytes) -> bytes:
    data = _LINE_END.sub(b"\r\n", data)
    return data if data.endswith(b"\r\n") or not data else data + b"\r\n"


def rendered(message: Message) -> bytes:
    """The message as RETR sends it (before dot-stuffing)."""
    trace = (message.trace or "").encode("utf-8", "replace")
    prefix = _return_path(message) + _crlf(trace) + authentication_results(message)
    return prefix + without_our_results(_crlf(message_bytes(message)))


def top(data: bytes, lines: int) -> bytes:
    """The header section of a rendered message, the blank line, and ``lines`` lines of its
    body (RFC 1939 TOP)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data  # headers only: there is no body to count lines of
    body_start = end + 4
    position = body_start
    for _ in range(lines):
        found = data.find(b"\r\n", position)
        if found < 0:
            return data
        position = found + 2
    return data[:position]
