"""A small BER/DER walker and writer for the fixed-shape CMS structures S/MIME uses.

Why not asn1crypto throughout: it copies each nested level's contents when it parses (a 1 MB
envelope would exist four or five times over), and building or walking its object model costs
several times the one RSA operation a message needs. Structures are walked here by offset
(X.690 section 8.1) over ``bytes`` (indexing a memoryview is twice as slow); only the pieces
:func:`octets` hands out are views, so encrypted content is never copied. asn1crypto still
parses the rarer parts (OAEP, PSS and GCM parameters, names encoded differently).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from agent.errors import AgentError, Code

_MAX_DEPTH = 24
# Values one walk may read. Real S/MIME holds a few tens of thousands at most (a 25 MB content in
# 1,000-byte BER segments), while two-byte values would give a 25 MB message twelve million,
# each read again at every level a parser descends.
MAX_ELEMENTS = 50_000

SEQUENCE = 0x30
SET = 0x31
OCTET_STRING = 0x04
INTEGER = 0x02
OID = 0x06


def _malformed(detail: str) -> AgentError:
    return AgentError(Code.MALFORMED, f"BER: {detail}")


class Node(NamedTuple):  # a tuple: created tens of times per message, so kept cheap
    tag: int  # the identifier octet (class, constructed bit and tag number < 31)
    start: int
    content_start: int
    content_end: int
    end: int
    indefinite: bool

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


# NamedTuple's generated __new__ is Python code; building the tuple directly skips that frame
# (``read`` runs about sixty times per message).
_new_node = tuple.__new__


def read(buf: bytes, pos: int, limit: int, depth: int = 0, budget: list[int] | None = None) -> Node:
    """The TLV at ``pos`` (X.690 sections 8.1.2-8.1.5), not extending past ``limit``.

    An indefinite length is found only by reading everything inside, so every value read counts
    against ``budget`` (a one-element list shared by the reads of one walk; a fresh
    ``MAX_ELEMENTS`` when none is given)."""
    if budget is None:
        budget = [MAX_ELEMENTS]
    budget[0] -= 1
    if budget[0] < 0:
        raise _malformed("too many elements")
    if depth > _MAX_DEPTH:
        raise _malformed("nesting too deep")
    if pos + 2 > limit:
        raise _malformed("truncated")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise _malformed("high tag numbers are not used in CMS")
    first = buf[pos + 1]
    cursor = pos + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        if not tag & 0x20:
            raise _malformed("indefinite length on a primitive")
        content_end = cursor
        while True:
            if content_end + 2 > limit:
                raise _malformed("missing end-of-contents")
            if buf[content_end] == 0 and buf[content_end + 1] == 0:
                return _new_node(Node, (tag, pos, cursor, content_end, content_end + 2, True))
            content_end = read(buf, content_end, limit, depth + 1, budget).end
    else:
        count = first & 0x7F
        if count > 4 or cursor + count > limit:
            raise _malformed("bad length")
        length = int.from_bytes(buf[cursor : cursor + count], "big")
        cursor += count
    end = cursor + length
    if end > limit:
        raise _malformed("truncated")
    return _new_node(Node, (tag, pos, cursor, end, end, False))


def children(buf: bytes, node: Node, depth: int = 0) -> list[Node]:
    if not node.constructed:
        raise _malformed("expected a constructed value")
    # One budget for all the children: each read alone could stay within its own while the
    # siblings together (indefinite lengths, each walked to its end) hold millions of values.
    budget = [MAX_ELEMENTS]
    out: list[Node] = []
    pos = node.content_start
    while pos < node.content_end:
        child = read(buf, pos, node.content_end, depth + 1, budget)
        out.append(child)
        pos = child.end
    return out


def expect(node: Node, tag: int, what: str) -> Node:
    if node.tag != tag:
        raise _malformed(f"expected {what}")
    return node


def octets(buf: bytes, node: Node, depth: int = 0) -> list[memoryview]:
    """Pieces of an OCTET STRING, primitive or constructed (X.690 section 8.7), as views into
    ``buf`` (never copies: the encrypted content of a large message is one of them)."""
    if not node.constructed:
        return [memoryview(buf)[node.content_start : node.content_end]]
    pieces: list[memoryview] = []
    for child in children(buf, node, depth):
        if child.tag & 0x1F != OCTET_STRING:
            raise _malformed("constructed string with a non-string piece")
        pieces.extend(octets(buf, child, depth + 1))
    return pieces


def raw(buf: bytes, node: Node) -> bytes:
    return buf[node.start : node.end]


def length_octets(length: int) -> bytes:
    if length < 0x80:
        return _SHORT_LENGTHS[length]
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


_SHORT_LENGTHS = tuple(bytes((n,)) for n in range(0x80))


def header(tag: int, length: int) -> bytes:
    """Identifier and length octets (X.690 sections 8.1.2-8.1.3, definite form, minimal).

    Written out for the common sizes: it runs a few dozen times per message."""
    if length < 0x80:
        return bytes((tag, length))
    if length < 0x100:
        return bytes((tag, 0x81, length))
    if length < 0x10000:
        return bytes((tag, 0x82, length >> 8, length & 0xFF))
    return bytes((tag,)) + length_octets(length)


def tlv(tag: int, chunks: Sequence[bytes]) -> list[bytes]:
    """DER of one value whose contents are ``chunks`` (kept as a list: joined once, at the end)."""
    return [header(tag, sum(map(len, chunks))), *chunks]


def encode(tag: int, contents: bytes) -> bytes:
    return header(tag, len(contents)) + contents


def integer(value: int) -> bytes:
    """DER INTEGER (X.690 section 8.3), two's complement, minimal length."""
    size = value.bit_length() // 8 + 1
    return encode(INTEGER, value.to_bytes(size, "big", signed=True))


def octet_string(value: bytes) -> bytes:
    return encode(OCTET_STRING, value)


def sequence(*parts: bytes) -> bytes:
    return encode(SEQUENCE, b"".join(parts))


def set_of(*parts: bytes) -> bytes:
    """DER SET OF: elements in ascending order of their encodings (X.690 section 11.6)."""
    return encode(SET, b"".join(sorted(parts)))
