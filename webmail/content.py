"""A stored message's bytes, opened for reading: body, HTML and attachments.

Inbound mail is shown from ``Message.content`` (the inner message the agent decrypted and
verified), never from the wire bytes; outbound mail from ``Message.raw`` (what the user
submitted, before protection).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.message import Message as MimeMessage
from email.parser import BytesParser

from hisp.mailtext import header_text, printable
from hisp.models import Message

# The one rule for which bytes a user reads, shared with POP3 retrieval (hisp/pop3/render.py).
from hisp.pop3.render import message_bytes

_UNSAFE_FILENAME = re.compile(r"[^\w.\- ()]+")
_XML_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-v3+xml",
                        "application/cda+xml", "text/x-cda-r2+xml"})
_ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed",
                        "application/octet-stream"})


@dataclass(frozen=True)
class Attachment:
    index: int  # position among the message's leaf parts: stable for a given message
    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def looks_like_cda(self) -> bool:
        xmlish = self.content_type in _XML_TYPES or self.filename.lower().endswith(".xml")
        return xmlish and b"ClinicalDocument" in self.data[:4096]

    @property
    def looks_like_xdm(self) -> bool:
        zipish = self.content_type in _ZIP_TYPES or self.filename.lower().endswith(".zip")
        return zipish and self.data[:4] == b"PK\x03\x04" and b"IHE_XDM/" in self.data


@dataclass(frozen=True)
class OpenedMessage:
    headers: dict[str, str]
    text: str
    html: str
    attachments: tuple[Attachment, ...]


def safe_filename(name: str | None, *, index: int, content_type: str = "") -> str:
    """A file name that is only a name: no path, no control or shell characters."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_FILENAME.sub("_", base).strip(" .")[:120]
    if base:
        return base
    extension = {"text/plain": ".txt", "application/pdf": ".pdf", "text/xml": ".xml",
                 "application/xml": ".xml", "application/zip": ".zip"}.get(content_type, ".bin")
    return f"attachment-{index}{extension}"


def _text_of(part: MimeMessage) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, errors="replace")
    except (LookupError, ValueError):  # an unknown charset name, or one holding a NUL
        text = payload.decode("utf-8", errors="replace")
    # A sender's control characters (a NUL, terminal escapes) shown as U+FFFD: quoted in a
    # reply they would otherwise make the compose form, which refuses a NUL, refuse the reply.
    return printable(text)


def _parse(data: bytes) -> EmailMessage:
    """The message parsed; for one nested too deeply to parse, its header block only, so that
    its whole body is offered as one attachment (nothing lost, the page still opens).

    The email package parses, and walks, each nested multipart or message/rfc822 part one
    Python frame deeper: a thousand levels (some 50 KB) raised RecursionError, a 500 on every
    page of the message (found by fuzzing). The walk is tried here too, one frame deeper than
    the caller's, so the caller's own walk cannot fail where this one succeeded."""
    parser = BytesParser(policy=policy.default)
    try:
        parsed: EmailMessage = parser.parsebytes(data)  # type: ignore[assignment]
        for _part in parsed.walk():
            pass
    except RecursionError:
        parsed = parser.parsebytes(data, headersonly=True)  # type: ignore[assignment]
    return parsed


# A lone surrogate (a charset such as utf-7 or unicode_escape can decode to one) cannot be
# encoded as UTF-8: the page showing it answered 500 (found by fuzzing).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogates(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def open_bytes(data: bytes) -> OpenedMessage:
    parsed = _parse(data)
    headers = {}
    for name in ("From", "To", "Cc", "Subject", "Date", "Message-ID"):
        value = header_text(parsed, name)
        if value is not None:
            headers[name] = printable(value)
    text = html = ""
    attachments: list[Attachment] = []
    for index, part in enumerate(p for p in parsed.walk() if not p.is_multipart()):
        content_type = part.get_content_type()
        disposition = part.get_content_disposition()
        if disposition != "attachment" and content_type == "text/plain" and not text:
            text = _no_surrogates(_text_of(part))
            continue
        if disposition != "attachment" and content_type == "text/html" and not html:
            html = _no_surrogates(_text_of(part))
            continue
        payload = part.get_payload(decode=True)
        attachments.append(
            Attachment(
                index=index,
                filename=safe_filename(part.get_filename(), index=index, content_type=content_type),
                content_type=content_type,
                data=payload if isinstance(payload, bytes) else b"",
            )
        )
    return OpenedMessage(headers=headers, text=text, html=html, attachments=tuple(attachments))


def open_message(message: Message) -> OpenedMessage:
    return open_bytes(message_bytes(message))


def attachment(message: Message, index: int) -> Attachment | None:
    for item in open_message(message).attachments:
        if item.index == index:
            return item
    return None
