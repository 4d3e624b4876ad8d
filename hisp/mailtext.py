"""Reading messages for people and for the flow's decisions: header summaries, the text body,
the attachment list, and the few header fields that steer processing.

Display parsing goes through the standard ``email`` package; nothing here ever rewrites the
bytes a signature covers.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.feedparser
import email.policy
import logging
import re
from dataclasses import dataclass, replace
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr

from agent.errors import AgentError
from agent.mime import CRLF, parse_entity, to_crlf

log = logging.getLogger(__name__)

SNIPPET_CHARS = 200


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class Summary:
    message_id: str
    sender: str  # the From header as written (display name included)
    sender_address: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    body_text: str
    attachments: tuple[Attachment, ...]

    def __post_init__(self) -> None:
        # What a sender wrote goes into database text, where a NUL is refused (PostgreSQL):
        # shown as U+FFFD instead, so a malformed message is delivered rather than failing
        # every attempt. The stored message keeps every byte.
        for name in ("message_id", "sender", "sender_address", "subject", "body_text"):
            object.__setattr__(self, name, printable(getattr(self, name)))
        for name in ("to", "cc"):
            object.__setattr__(self, name, tuple(printable(v) for v in getattr(self, name)))
        if self.attachments:  # most clinical mail has none: no work on the hot path
            object.__setattr__(self, "attachments", tuple(
                replace(a, filename=printable(a.filename)) for a in self.attachments
            ))

    @property
    def snippet(self) -> str:
        """The first characters of the text with its white space collapsed, read from as short
        a prefix as gives them (splitting a 25 MB text whole made millions of words). A prefix's
        words are the text's first words, the last perhaps cut short, so its collapsed form
        begins the text's: once that is long enough, or the prefix is the whole text, it starts
        with the snippet."""
        text = self.body_text
        size = 4 * SNIPPET_CHARS
        while True:
            collapsed = " ".join(text[:size].split())
            if len(collapsed) >= SNIPPET_CHARS or size >= len(text):
                return collapsed[:SNIPPET_CHARS]
            size *= 8


# C0 controls but tab, LF and CR; DEL and the C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


# Any control character, line ends and tab included: none belongs in an address or an id.
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a control character (tab and line ends included): an SMTP path,
    an address or a Message-ID holding one is refused, not shown (RFC 5321 4.1.2, 5322 3.6.4)."""
    return _ANY_CONTROL.search(text) is not None


def printable(text: str) -> str:
    """``text`` with control characters (a NUL, terminal escapes) shown as U+FFFD; tab and line
    ends stay. For words from outside (a message, a remote server's reply) that are stored in
    database text, logged or shown."""
    return _CONTROL.sub("\ufffd", text) if _CONTROL.search(text) else text


# Large enough that feeding costs nothing per call, small enough to be no copy worth counting.
_FEED_CHUNK = 1 << 20


def parse(raw: bytes) -> EmailMessage:
    """What ``email.message_from_bytes`` gives, fed to its parser in pieces: that function
    decodes the whole message to one str and copies it into a StringIO (which keeps four bytes
    a character), five times the message before parsing begins. Decoding ASCII with
    surrogateescape is byte for byte, so pieces decode as the whole would, and the parser is
    fed pieces there too (8 KB at a time, email.parser.Parser.parse)."""
    parser = email.feedparser.FeedParser(policy=email.policy.default)
    view = memoryview(raw)
    for start in range(0, len(view), _FEED_CHUNK):
        parser.feed(str(view[start : start + _FEED_CHUNK], "ascii", "surrogateescape"))
    message = parser.close()
    assert isinstance(message, EmailMessage)
    return message


def header_text(message: EmailMessage, name: str) -> str | None:
    """The first ``name`` field as text (encoded-words decoded); None when there is none.

    The email package's header parsers fail on some malformed fields, and not only with the
    errors they document: ``To: User1@`` and ``Message-ID: <`` raise IndexError, a group
    whose display name runs into an address AttributeError. Such a field is given as written,
    so that a message holding one is still filed and shown (found by fuzzing)."""
    if name not in message:
        return None
    try:
        return str(message.get(name))
    except Exception:  # noqa: BLE001 - see above: any error of the parser's, not ours
        return _as_written(message, name)[0]


def _as_written(message: EmailMessage, name: str) -> list[str]:
    """The raw values of every ``name`` field: unparsed, line ends unfolded, and bytes that
    are not UTF-8 (kept as surrogates by the parser) shown as U+FFFD."""
    wanted = name.lower()
    return [
        " ".join(value.encode("utf-8", "surrogateescape").decode("utf-8", "replace").split())
        for key, value in message.raw_items()
        if key.lower() == wanted
    ]


def _header(message: EmailMessage, name: str) -> str:
    return " ".join((header_text(message, name) or "").split())


def addresses(message: EmailMessage, name: str) -> tuple[str, ...]:
    try:
        values = [str(v) for v in message.get_all(name, failobj=[])]
    except Exception:  # noqa: BLE001 - the parser's own failures, as in header_text
        # Listed as written: a reader still sees who else it went to, however malformed.
        written = (part.strip() for value in _as_written(message, name) for part in value.split(","))
        return tuple(part for part in written if part)
    return tuple(addr for _n, addr in getaddresses(values) if addr)


def summarise(raw: bytes) -> Summary:
    plain = _plain_ascii_summary(raw)
    if plain is not None:
        return plain
    # One parse, whatever the type (a 25 MB message parsed twice held both trees at once). A
    # single-part text message (most clinical mail, every notice we file) then has its
    # Content-Type read once instead of on every EmailMessage helper call; for such a message
    # the full parse is what a header-only parse gives (the rest of the input is its payload,
    # email.feedparser), so the Summary is the same either way (tests compare them).
    try:
        message = parse(raw)
    except RecursionError:
        # Parts nested a thousand deep: the email package's parser recurses once per level.
        log.warning("a message nested too deeply to parse is summarised by its header fields")
        return _summary(parse(head_of(raw)), "", [])
    try:
        return _parsed_summary(message)
    except Exception:  # noqa: BLE001 - the email package's own failures on hostile MIME
        # Filed with its header fields and without its text in the index: better than a
        # message that fails on every attempt and is rejected, lost to its recipient (the
        # webmail shows the stored message itself).
        log.warning("a message's body could not be read for its summary", exc_info=True)
        return _summary(message, "", [])


def _parsed_summary(message: EmailMessage) -> Summary:
    content_type = message.get_content_type()
    if not content_type.startswith("text/"):
        return _summary(message, body_text(message), attachments(message))
    # RFC 2045 section 5.2: a part without Content-Type is text/plain. An inline text/plain or
    # text/html part is its own body (EmailMessage.get_body), and has no attachments.
    subtype = content_type.partition("/")[2]
    body = ""
    if subtype in ("plain", "html") and not message.is_attachment():
        body = _single_text(message, html=subtype == "html")
    return _summary(message, body, [])


# The common clinical message, read without the email package (whose header objects cost more
# than the rest of delivery's Python): all ASCII, CRLF only, no encoded-words, a text/plain
# body without transfer encoding, and address fields of plain addr-specs. For exactly these
# the email package's rendering is the text itself, so the Summary is the same (the tests
# compare both paths); anything else returns None and takes the general path.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_LIST = re.compile(rf"{_ADDR}(?:[ \t]*,[ \t]*{_ADDR})*")
_PLAIN_SENDER = re.compile(rf"(?:([A-Za-z0-9]+(?: [A-Za-z0-9]+)*) <({_ADDR})>|({_ADDR}))")
_PLAIN_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>")
_ASCII_CHARSETS = frozenset({"us-ascii", "ascii", "utf-8", "utf8"} | {
    f"iso-8859-{n}" for n in range(1, 16)
} | {f"windows-{n}" for n in range(1250, 1259)})


def _plain_ascii_summary(raw: bytes) -> Summary | None:
    if not raw.isascii() or raw.count(b"\n") != raw.count(b"\r\n") or b"=?" in head_of(raw):
        return None
    if raw.count(b"\r") != raw.count(b"\r\n"):
        return None
    try:
        entity = parse_entity(raw)
        content_type = entity.content_type
    except AgentError:
        return None
    charset = (content_type.param("charset") or "us-ascii").lower()
    if (
        content_type.type != "text/plain"
        or charset not in _ASCII_CHARSETS
        or entity.transfer_encoding not in ("7bit", "8bit")
        or entity.get("content-disposition") is not None
    ):
        return None
    sender = " ".join((entity.get("from") or "").split())
    found = _PLAIN_SENDER.fullmatch(sender) if sender else None
    message_id = " ".join((entity.get("message-id") or "").split())
    if (sender and found is None) or (message_id and not _PLAIN_ID.fullmatch(message_id)):
        return None
    recipients: list[tuple[str, ...]] = []
    for name in ("to", "cc"):
        values = [" ".join(v.split()) for v in entity.get_all(name)]
        if any(not _PLAIN_LIST.fullmatch(v) for v in values):
            return None
        recipients.append(tuple(a.strip() for v in values for a in v.split(",")))
    sender_address = (found.group(2) or found.group(3)) if found else ""
    return Summary(
        message_id=message_id,
        sender=sender,
        sender_address=sender_address,
        to=recipients[0],
        cc=recipients[1],
        subject=" ".join((entity.get("subject") or "").split()),
        body_text=str(entity.body, "ascii"),  # decoded from the span: no copy of the bytes
        attachments=(),
    )


def _summary(message: EmailMessage, body: str, found: list[Attachment]) -> Summary:
    sender = _header(message, "From")
    return Summary(
        message_id=_header(message, "Message-ID"),
        sender=sender,
        sender_address=parseaddr(sender)[1],
        to=addresses(message, "To"),
        cc=addresses(message, "Cc"),
        subject=_header(message, "Subject"),
        body_text=body,
        attachments=tuple(found),
    )


def _single_text(part: EmailMessage, *, html: bool) -> str:
    """What ``_text_of(part)`` gives for a text part, reading its Content-Type once (the
    steps of email.contentmanager's text handler, with the same error handling)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    try:
        text = payload.decode(str(part.get_param("charset", "ASCII")), "replace")
    except (LookupError, ValueError, AssertionError):
        text = payload.decode("utf-8", "replace")
    if html:
        text = re.sub(r"<[^>]*>", " ", text)
    return text


def body_text(message: EmailMessage) -> str:
    try:
        part = message.get_body(preferencelist=("plain", "html"))
    except (KeyError, LookupError):
        part = None
    if part is None:
        return ""
    try:
        text = part.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(text, str):
        return ""
    if part.get_content_subtype() == "html":
        # Search text only: tags out. Rendering sanitises separately (webmail uses nh3).
        text = re.sub(r"<[^>]*>", " ", text)
    return text


def attachments(message: EmailMessage) -> list[Attachment]:
    found: list[Attachment] = []
    for part in message.iter_attachments() if message.is_multipart() else ():
        assert isinstance(part, EmailMessage)
        size = _base64_size(part)
        if size is None:
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes) else 0
        found.append(
            Attachment(
                filename=part.get_filename() or "",
                content_type=part.get_content_type(),
                size=size,
            )
        )
    return found


_SIZE_CHUNK = 1 << 20  # characters of base64 decoded at a time


def _base64_size(part: EmailMessage) -> int | None:
    """``len(part.get_payload(decode=True))`` for a well-formed base64 part, decoded a piece at
    a time; None for anything else (the caller decodes it the email package's way).

    The email package decodes an attachment whole, through a copy, a list of its lines and
    their join: several times a large attachment at once, only to count its bytes. For a part it
    decodes without complaint (ASCII, a whole number of quanta, strict base64 once line ends
    are dropped: ``email._encoded_words.decode_b``'s first try) the pieces give the same count:
    each piece but the last is whole quanta of the alphabet alone (no pad character), which
    strict decoding reads the same whether it starts the input or follows such quanta.
    """
    if part.is_multipart():
        return None
    if str(part.get("content-transfer-encoding", "")).lower() != "base64":
        return None
    payload = part.get_payload()
    if not isinstance(payload, str) or not payload.isascii():
        return None  # a surrogate-escaped or non-ASCII payload takes the package's own path
    size, carry, padded = 0, b"", False
    for start in range(0, len(payload), _SIZE_CHUNK):
        # bytes.splitlines, which the package joins back, splits at CR and LF alone.
        data = carry + payload[start : start + _SIZE_CHUNK].encode("ascii").translate(None, b"\r\n")
        whole = len(data) - len(data) % 4
        data, carry = data[:whole], data[whole:]
        if not data:
            continue
        if padded:
            return None  # quanta after a pad character: not what strict decoding accepts
        try:
            size += len(base64.b64decode(data, validate=True))
        except binascii.Error:
            return None
        padded = b"=" in data
    return None if carry else size


# --- Header fields that steer the flow -------------------------------------------------------

FINAL_DELIVERY = "x-direct-final-destination-delivery"


class OptionsMalformed(ValueError):
    pass


def wants_final_delivery(raw: bytes) -> bool:
    """Whether the sender asked for timely and reliable delivery (Implementation Guide for
    Delivery Notification 3.0 section 3.2, RFC 3798 section 2.2 syntax):
    ``Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true``.

    Raises :class:`OptionsMalformed` when the field is present but does not parse."""
    values = header_values(raw, "disposition-notification-options")
    asked = False
    for value in values:
        for parameter in value.split(";"):
            if not parameter.strip():
                continue
            attribute, eq, rest = parameter.partition("=")
            if not eq:
                raise OptionsMalformed("parameter without '='")
            importance, comma, tail = rest.partition(",")
            if importance.strip().lower() not in ("required", "optional") or not comma:
                raise OptionsMalformed("importance must be 'required' or 'optional'")
            settings = [_word(v) for v in tail.split(",")]
            if attribute.strip().lower() == FINAL_DELIVERY:
                if settings != ["true"]:
                    raise OptionsMalformed("X-DIRECT-FINAL-DESTINATION-DELIVERY must be 'true'")
                asked = True
    return asked


def _word(value: str) -> str:
    """A parameter value, ``word`` in RFC 3798 2.2 (an atom or a quoted-string), as its text in
    lower case: ``"true"`` is ``true``."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    return value.lower()


def header_values(raw: bytes, name: str) -> list[str]:
    return parse_entity(to_crlf(head_of(raw))).get_all(name)


def head_of(raw: bytes) -> bytes:
    """The header block, with its final CRLF (cheap: no body copy beyond the block)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
        return raw if end < 0 else raw[: end + 1]
    return raw[: end + 2]


def is_report(raw: bytes) -> str | None:
    """``disposition-notification`` or ``delivery-status`` for an MDN or DSN, else None."""
    content_type = parse_entity(to_crlf(head_of(raw))).content_type
    if content_type.type != "multipart/report":
        return None
    kind = (content_type.param("report-type") or "").lower()
    return kind if kind in ("disposition-notification", "delivery-status") else None


def is_auto_generated(raw: bytes, *, envelope_from: str = "") -> bool:
    """Mail that must never be answered automatically (RFC 3834 section 2; RFC 3798 2.1)."""
    if not envelope_from or envelope_from.lower().startswith(("mailer-daemon@", "postmaster@")):
        return True
    entity = parse_entity(to_crlf(head_of(raw)))
    auto = (entity.get("auto-submitted") or "no").strip().lower()
    precedence = (entity.get("precedence") or "").strip().lower()
    return (
        auto != "no"
        or precedence in ("bulk", "list", "junk")
        or entity.get("list-id") is not None
        or is_report(raw) is not None
    )


def without_fields(raw: bytes, names: frozenset[str]) -> bytes:
    """``raw`` with the named header fields removed (folded lines included), body untouched."""
    data = to_crlf(raw)
    entity = parse_entity(data)
    kept = b"".join(h.raw for h in entity.headers if h.key not in names)
    return kept + CRLF + bytes(entity.body)


def prepend_fields(raw: bytes, fields: list[tuple[str, str]]) -> bytes:
    lines = b"".join(f"{name}: {value}".encode("ascii") + CRLF for name, value in fields)
    return lines + raw
