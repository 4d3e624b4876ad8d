"""Just enough MIME for S/MIME, on bytes.

Signatures cover exact bytes (RFC 1847 section 5.1; RFC 8551 section 3.1.1), so nothing here
re-serialises a message through the ``email`` package: parts are sliced out of the received bytes
and headers are copied line for line. The only transformation is canonical line endings (CRLF,
RFC 8551 section 3.1.1), applied once to a whole entity.
"""

from __future__ import annotations

import binascii
import re
import secrets
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from functools import lru_cache
from typing import NamedTuple

from pybase64 import b64encode

from agent.errors import AgentError, Code

CRLF = b"\r\n"
_MAX_HEADER_LINES = 10_000


def to_crlf(data: bytes) -> bytes:
    """Canonical line endings: every bare LF becomes CRLF (RFC 8551 section 3.1.1).

    Already-canonical input is returned as is (no copy), which keeps 1 MB messages cheap.
    """
    lf = data.count(b"\n")
    if lf == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Header(NamedTuple):  # a tuple: messages carry dozens, so creation is kept cheap
    name: str  # as received
    raw: bytes  # the whole field, folded lines included, with its final CRLF
    key: str  # name in lower case

    @property
    def value(self) -> str:
        """Unfolded value (RFC 5322 section 2.2.3), decoded leniently for parsing only."""
        body = self.raw.split(b":", 1)[1]
        return body.replace(b"\r\n", b"").decode("utf-8", "replace").strip()


@dataclass(frozen=True)
class Entity:
    """A MIME entity: its header fields, and where its body lies in the bytes it came from.

    The body is kept as a span of ``source`` rather than a copy: a 1 MB part is sliced out only
    when a caller asks for it.
    """

    headers: tuple[Header, ...]
    source: bytes
    body_start: int
    body_end: int

    def get(self, name: str) -> str | None:
        key = name.lower()
        for header in self.headers:
            if header.key == key:
                return header.value
        return None

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [h.value for h in self.headers if h.key == key]

    @property
    def content_type(self) -> ContentType:
        return parse_content_type(self.get("content-type"))

    @property
    def transfer_encoding(self) -> str:
        return (self.get("content-transfer-encoding") or "7bit").strip().lower()

    @property
    def body(self) -> memoryview:
        return memoryview(self.source)[self.body_start : self.body_end]

    def decoded_body(self) -> bytes | memoryview:
        """The body with its Content-Transfer-Encoding removed (RFC 2045 section 6)."""
        return decode_transfer(self.body, self.transfer_encoding)


def parse_entity(data: bytes, start: int = 0, end: int | None = None) -> Entity:
    """Split CRLF-canonical ``data[start:end]`` at the first empty line (RFC 5322 section 2.1)."""
    stop = len(data) if end is None else end
    if data.startswith(CRLF, start, stop):
        return Entity((), data, start + 2, stop)
    blank = data.find(b"\r\n\r\n", start, stop)
    if blank < 0:
        head = data[start:stop]
        if not head.endswith(CRLF):
            head += CRLF
        return Entity(_parse_header_block(head), data, stop, stop)
    return Entity(_parse_header_block(data[start : blank + 2]), data, blank + 4, stop)


_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def parse_message(raw: bytes) -> Entity:
    """An RFC 5322 message as received: the header block is canonicalised to CRLF, the body is
    left byte for byte (it may be binary; base64 decoding ignores line ends anyway)."""
    if raw.startswith((b"\r\n", b"\n")):
        start = 2 if raw.startswith(b"\r\n") else 1
        return Entity((), raw, start, len(raw))
    blank = _BLANK_LINE.search(raw)
    head_end, body_start = (blank.start(), blank.end()) if blank else (len(raw), len(raw))
    head = to_crlf(raw[:head_end]) + CRLF
    return Entity(_parse_header_block(head), raw, body_start, len(raw))


# NamedTuple's generated __new__ is Python code; building the tuple directly skips that frame.
_new_header = tuple.__new__

# One header field (RFC 5322 section 2.2): a name of printable US-ASCII except colon (trailing
# WSP tolerated, obs-syntax), a colon, the rest of the line, and any folded continuation lines.
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")


def _parse_header_block(head: bytes) -> tuple[Header, ...]:
    """Fields of a CRLF-terminated header block, each kept byte for byte."""
    headers = []
    pos, end = 0, len(head)
    match = _FIELD.match
    while pos < end:
        found = match(head, pos)
        if found is None:
            raise AgentError(Code.MALFORMED, "invalid header field")
        raw, name_bytes = found.group(0, 1)
        name = name_bytes.decode("ascii")
        headers.append(_new_header(Header, (name, raw, name.lower())))
        pos = found.end()
        if len(headers) > _MAX_HEADER_LINES:
            raise AgentError(Code.MALFORMED, "too many header fields")
    return tuple(headers)


@dataclass(frozen=True)
class ContentType:
    type: str  # "type/subtype", lower case
    params: dict[str, str]

    def param(self, name: str) -> str | None:
        return self.params.get(name.lower())


# RFC 2045 section 5.1 parameter: attribute "=" (token / quoted-string).
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def parse_content_type(value: str | None) -> ContentType:
    """Parse a Content-Type value (RFC 2045 section 5.1); absent means text/plain."""
    if value is None:
        return ContentType("text/plain", {})
    media, semicolon, rest = value.partition(";")
    media = media.strip().lower()
    if "/" not in media:
        raise AgentError(Code.MALFORMED, "invalid Content-Type")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(semicolon + rest):
        name, val = match.group(1).lower(), match.group(2).strip()
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        params.setdefault(name, val)
    return ContentType(media, params)


def decode_transfer(body: memoryview, encoding: str) -> bytes | memoryview:
    try:
        if encoding == "base64":
            return binascii.a2b_base64(body)
        if encoding == "quoted-printable":
            return binascii.a2b_qp(body)
    except (binascii.Error, ValueError) as exc:
        raise AgentError(Code.MALFORMED, f"bad {encoding} body") from exc
    if encoding in ("7bit", "8bit", "binary"):
        return body
    raise AgentError(Code.MALFORMED, "unknown Content-Transfer-Encoding")


def base64_lines(data: bytes) -> bytes:
    """Base64 in lines of 76 characters ending in CRLF (RFC 2045 section 6.8)."""
    return b"".join(base64_blocks(data))


_BLOCK = 57 * 1024  # input bytes per block: a whole number of 57-byte (76-character) lines


@lru_cache(maxsize=1024)
def _lines(count: int) -> struct.Struct:
    """Cuts ``count`` 76-character lines in one C call (one slice per line in Python costs as
    much as the base64 encoding itself)."""
    return struct.Struct("76s" * count)


def base64_blocks(data: bytes) -> list[bytes]:
    """:func:`base64_lines` as a list of blocks, so a large body is never held twice over."""
    view = memoryview(data)
    blocks = []
    for offset in range(0, len(data), _BLOCK):
        # pybase64 encodes with SIMD, exactly as the standard alphabet with padding (RFC 4648
        # section 4); binascii would take as long as everything else a protect does but sign.
        text = b64encode(view[offset : offset + _BLOCK])
        whole = len(text) // 76
        lines = list(_lines(whole).unpack_from(text))
        if len(text) > whole * 76:
            lines.append(text[whole * 76 :])
        lines.append(b"")
        blocks.append(b"\r\n".join(lines))
    return blocks


def split_multipart(data: bytes, boundary: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of each body part of the multipart body ``data[start:end]`` (RFC 2046 5.1.1).

    The CRLF before a delimiter belongs to the delimiter, so a part ends without it; the preamble
    and epilogue are dropped. A missing close delimiter is malformed.
    """
    if not boundary or len(boundary) > 70 or not boundary.isascii():
        raise AgentError(Code.MALFORMED, "invalid multipart boundary")
    dash = b"--" + boundary.encode("ascii")
    parts: list[tuple[int, int]] = []
    # A delimiter either starts the body or follows a CRLF.
    if data.startswith(dash, start, end):
        pos = start
    else:
        found = data.find(b"\r\n" + dash, start, end)
        if found < 0:
            raise AgentError(Code.MALFORMED, "multipart without delimiter")
        pos = found + 2
    while True:
        after = pos + len(dash)
        if data.startswith(b"--", after, end):
            return parts
        eol = data.find(CRLF, after, end)
        if eol < 0 or data[after:eol].strip(b" \t"):
            raise AgentError(Code.MALFORMED, "invalid multipart delimiter line")
        part_start = eol + 2
        nxt = data.find(b"\r\n" + dash, part_start - 2, end)
        if nxt < 0:
            raise AgentError(Code.MALFORMED, "multipart without close delimiter")
        parts.append((part_start, max(nxt, part_start)))
        pos = nxt + 2


def new_boundary() -> str:
    return "----=_Part_" + secrets.token_hex(12)


# The standard parser takes about a microsecond a character: a From or To field of megabytes
# (an outer header is anyone's to write) would hold a worker for seconds. Some 1,500 addresses.
MAX_ADDRESS_FIELD_CHARS = 64 * 1024


def addresses(values: Iterable[str]) -> list[str]:
    """Bare addresses from address header values (RFC 5322 section 3.4), parse only.

    Plain lists (``a@b, Name <c@d>``) are split directly; anything with quoting, comments or
    groups goes to the standard library's full parser.
    """
    values = list(values)
    if sum(map(len, values)) > MAX_ADDRESS_FIELD_CHARS:
        raise AgentError(Code.MALFORMED, "address fields too long")
    found: list[str] = []
    for value in values:
        if any(c in value for c in '"(\\:;'):
            try:
                found.extend(addr for _name, addr in getaddresses([value]) if addr)
            except RecursionError as exc:
                # The standard parser recurses once per nested comment or group: a clear-text
                # From of a few thousand "(" would otherwise escape as a crash, not a rejection.
                raise AgentError(Code.MALFORMED, "an address field nests too deeply") from exc
            continue
        for item in value.split(","):
            item = item.strip()
            if "<" in item:
                item = item[item.rfind("<") + 1 :].partition(">")[0].strip()
            if item:
                found.append(item)
    return found


def normalise_address(address: str) -> str:
    """Local part as given, domain case-insensitive (RFC 5321 section 2.4)."""
    local, at, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}" if at else address.strip().lower()


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


def header_lines(headers: Sequence[Header], names: frozenset[str]) -> bytes:
    return b"".join(h.raw for h in headers if h.key in names)
