"""A readable view of an HL7 CDA R2 document (C-CDA): header facts and each section's narrative.

The XML is parsed only after a first pass refuses any DOCTYPE or entity declaration, so no
external entity is fetched and no entity expansion bomb runs (the defence defusedxml applies).
The narrative block (CDA R2 section 4.3.5) is mapped element by element to HTML and then
sanitised by nh3 like any mail HTML.

A longitudinal record can hold tens of thousands of result rows. The page converts sections up
to PAGE_HTML_CHARS of narrative; the others are listed and converted one at a time when asked
(``parse_cda(data, section=n)``), so the header facts come as soon as the XML is parsed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import escape
from itertools import islice
from xml.etree import ElementTree as ET
from xml.parsers import expat

from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from webmail.sanitise import clean_html

MAX_CDA_BYTES = 20 * 1024 * 1024
# Real C-CDA documents nest a few dozen elements deep; well below Python's recursion limit.
MAX_DEPTH = 200
# Each section's narrative is sanitised by nh3 calls of some 0.2 ms each plus time linear in the
# HTML: 200,000 tiny sections took minutes. Real documents have tens of sections.
MAX_SECTIONS = 1000
# The HTML parser under nh3 takes quadratic time on some shapes (text or elements straight inside
# a <table> are moved out before it, one by one): 2 MB of them took 7 s in one call. Each call
# gets about CHUNK_CHARS, cut between elements: 0.6 s for those 2 MB, and some 5 s for 20 MB
# of the worst shapes we found (20 MB of well-formed tables: 1-2 s).
CHUNK_CHARS = 32 * 1024
# A table's head is repeated in each piece of the table when it is no longer than this.
HEAD_CHARS = 2048
# The narrative converted for the page itself; bigger sections are converted when opened.
PAGE_HTML_CHARS = 4 * 1024 * 1024
# One section alone: as HTML a legitimate narrative is shorter than its XML (the tags get
# shorter), so a document within MAX_CDA_BYTES fits even when it is one long table.
SECTION_HTML_CHARS = 20 * 1024 * 1024
# Sections longer than this (some 300 table rows) are shown collapsed.
COLLAPSE_CHARS = 64 * 1024
# expat's cost grows faster than linearly with the number of distinct attribute names, and the
# attributes of one tag are all read before any handler runs: 20 MB of tags with made-up
# attribute names took 10-30 s to parse. A C-CDA uses a few dozen names, and no real start tag
# is a megabyte long; both bounds are checked before the cost is paid.
MAX_ATTRIBUTE_NAMES = 10_000
MAX_TAG_BYTES = 1024 * 1024
# A start or end tag (not a comment, CDATA section or processing instruction) longer than the
# bound; [^<>] never crosses another "<", so the scan is linear.
_LONG_TAG = re.compile(rb"<[^!?<>][^<>]{%d}" % MAX_TAG_BYTES)
V3 = "{urn:hl7-org:v3}"

# CDA narrative element -> HTML element (CDA R2 4.3.5.1 - 4.3.5.11).
_NARRATIVE = {
    "paragraph": "p", "content": "span", "br": "br", "sub": "sub", "sup": "sup",
    "table": "table", "thead": "thead", "tbody": "tbody", "tfoot": "tfoot", "tr": "tr",
    "th": "th", "td": "td", "caption": "caption", "col": "col", "colgroup": "colgroup",
    "item": "li", "footnote": "small", "footnoteRef": "small", "linkHtml": "a",
}
_CELL_ATTRIBUTES = ("colspan", "rowspan")
# For the walk's speed: the qualified names with a fixed HTML tag, and the start and end tags
# that take no attribute.
_HTML_TAGS = {V3 + name: html for name, html in _NARRATIVE.items()}
_START_TAGS = {html: f"<{html}>" for html in {*_NARRATIVE.values(), "span", "ol", "ul"}
               - {"td", "th", "a"}}
_END_TAGS = {html: f"</{html}>" for html in {*_NARRATIVE.values(), "span", "ol", "ul"}
             - {"br", "col"}}


class DocumentError(ValueError):
    """Not a CDA document we can show; ``code`` is stable, the text is for the user."""

    def __init__(self, code: str, text: str) -> None:
        self.code = code
        super().__init__(text)


@dataclass(frozen=True)
class Section:
    title: str
    html: SafeString | None  # None: too large for the page, converted when asked for by index
    level: int = 1
    index: int = 0  # position among all the document's sections, nested ones included
    rows: int = 0  # table rows in the narrative: tells the reader how long a section is

    @property
    def collapsed(self) -> bool:
        return self.html is not None and len(self.html) > COLLAPSE_CHARS


@dataclass(frozen=True)
class CdaDocument:
    title: str
    patient_name: str
    patient_birth: str
    patient_gender: str
    patient_ids: tuple[str, ...]
    author_name: str
    author_organisation: str
    date: str
    sections: tuple[Section, ...] = field(default_factory=tuple)


def _refuse_declarations(data: bytes) -> None:
    """Also bounds the nesting depth: the narrative and section walks recurse once per level,
    and a document nested thousands deep would otherwise exhaust the interpreter's stack."""
    depth = 0
    attribute_names: set[str] = set()

    def refuse(*_args: object) -> None:
        raise DocumentError("dtd-forbidden", "The document declares a DTD or entities; refused.")

    def start(_name: str, attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise DocumentError("too-deep", "The document is nested too deeply to show.")
        attribute_names.update(attributes)
        if len(attribute_names) > MAX_ATTRIBUTE_NAMES:
            raise DocumentError("too-complex", "The document has too many kinds of attribute.")

    def end(*_args: object) -> None:
        nonlocal depth
        depth -= 1

    if _LONG_TAG.search(data):
        raise DocumentError("too-complex", "The document has a tag too large to show.")
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise DocumentError("malformed", "The document is not well-formed XML.") from exc
    except DocumentError:
        raise  # from the handlers above; a ValueError too, so it must pass the clause below
    except (LookupError, ValueError) as exc:
        # expat asks Python's codecs for an encoding its XML declaration names but expat does
        # not know: an unknown name raises LookupError, a codec that is not a single-byte text
        # encoding ("idna", "utf-7", ...) UnicodeError or ValueError (found by fuzzing).
        raise DocumentError("malformed", "The document's character encoding is not supported.") from exc


def _text(element: ET.Element | None) -> str:
    if element is None:
        return ""
    return " ".join("".join(element.itertext()).split())


def _name(element: ET.Element | None) -> str:
    """A CDA PN or ON: prefix, given names, family, suffix in order, or the plain text."""
    if element is None:
        return ""
    parts = [
        _text(child)
        for child in element
        if child.tag in {V3 + "prefix", V3 + "given", V3 + "family", V3 + "suffix"}
    ]
    return " ".join(p for p in parts if p) or _text(element)


def _ts(element: ET.Element | None) -> str:
    """A CDA TS (YYYYMMDD[HHMM[SS]][+ZZZZ]) as YYYY-MM-DD[ HH:MM]."""
    if element is None:
        return ""
    low = element.find(V3 + "low")
    value = element.get("value", "") or (low.get("value", "") if low is not None else "")
    digits = value[:12]
    if len(digits) >= 8 and digits[:8].isdigit():
        date = f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}"
        if len(digits) >= 12 and digits[8:12].isdigit():
            return f"{date} {digits[8:10]}:{digits[10:12]}"
        return date
    return value


def _too_large() -> DocumentError:
    return DocumentError("too-large", "The document's narrative is too large to show.")


class _Open:
    """An element open in the HTML being written, to close and reopen where the HTML is cut."""

    __slots__ = ("end", "head", "items", "start")

    def __init__(self, start: str, end: str) -> None:
        self.start, self.end, self.head = start, end, ""
        self.items = 0  # of an ordered list: the items closed, so that it goes on numbering

    def reopened(self) -> str:
        if self.items:
            return f'<ol start="{self.items + 1}">'
        return self.start + self.head


def _html_tag(node: ET.Element) -> str:
    tag = node.tag.removeprefix(V3) if isinstance(node.tag, str) else ""
    if tag == "list":
        return "ol" if node.get("listType") == "ordered" else "ul"
    if tag == "renderMultiMedia":
        return ""  # references to observation media: nothing to show inline
    return _NARRATIVE.get(tag, "span")


def _start_tag(node: ET.Element, html_tag: str) -> str:
    attrs = ""
    if html_tag in ("td", "th"):
        attrs = "".join(
            f' {a}="{escape(node.get(a, ""))}"' for a in _CELL_ATTRIBUTES if node.get(a)
        )
    elif html_tag == "a" and node.get("href", "").startswith(("http://", "https://")):
        attrs = f' href="{escape(node.get("href", ""))}"'
    return f"<{html_tag}{attrs}>"


def _end_tag(html_tag: str) -> str:
    return "" if html_tag in ("br", "col") else f"</{html_tag}>"


def _narrative(element: ET.Element, limit: int) -> list[str]:
    """The narrative block as pieces of HTML of about CHUNK_CHARS, each with its elements closed:
    a long table becomes consecutive tables, each with the head, and a long ordered list goes on
    numbering. DocumentError once the pieces pass ``limit`` characters in all.

    This walk is most of the time for a long table (some 1.7 s for 16 MB of HTML): tags are
    looked up in precomputed tables, and a leaf (most cells) opens nothing on the stack."""
    pieces: list[str] = []
    out: list[str] = []
    size = 0  # of the piece being written
    done = 0  # of the finished pieces
    stack: list[_Open] = []
    rows = 0  # table rows and list items open: cut inside one only when it is itself long
    hard, soft = CHUNK_CHARS, CHUNK_CHARS // 2

    def text(raw: str) -> None:
        nonlocal size
        if done + size + len(raw) > limit:
            raise _too_large()
        html = escape(raw, quote=False)
        out.append(html)
        size += len(html)

    def cut() -> None:
        """Between elements: every element open is closed, and reopened in the next piece."""
        nonlocal size, done
        if done + size > limit:
            raise _too_large()
        if size < hard and rows:
            return
        out.extend(o.end for o in reversed(stack))
        pieces.append("".join(out))
        done += len(pieces[-1])
        out.clear()
        out.extend(o.reopened() for o in stack)
        size = sum(map(len, out))

    def children(node: ET.Element) -> None:
        if node.text:
            text(node.text)
        for child in node:
            walk(child)
            if child.tail:
                text(child.tail)
            if size >= soft or done + size > limit:
                cut()

    def walk(node: ET.Element) -> None:
        nonlocal size, rows
        html_tag = _HTML_TAGS.get(node.tag) or _html_tag(node)
        if not html_tag:
            children(node)
            return
        start = _START_TAGS.get(html_tag) or _start_tag(node, html_tag)
        end = _END_TAGS.get(html_tag) or _end_tag(html_tag)
        out.append(start)
        size += len(start)
        if len(node):
            mark, cuts = len(out) - 1, len(pieces)
            whole = html_tag in ("tr", "li")
            stack.append(_Open(start, end))
            rows += whole
            children(node)
            rows -= whole
            stack.pop()
        elif node.text:  # a leaf, the most common case: nothing can be cut inside it
            text(node.text)
        out.append(end)
        size += len(end)
        if html_tag not in ("li", "thead") or not stack:
            return
        parent = stack[-1]
        if html_tag == "li" and parent.start == "<ol>":
            parent.items += 1
        elif html_tag == "thead" and parent.start.startswith("<table") and len(node):
            head = "".join(out[mark:]) if len(pieces) == cuts else ""  # "" if cut inside
            if len(head) <= HEAD_CHARS:
                parent.head = head

    children(element)
    if done + size > limit:
        raise _too_large()
    pieces.append("".join(out))
    return pieces


def _sanitised(pieces: list[str]) -> SafeString:
    """Each piece sanitised on its own; several are kept apart so that the browser lays out
    only those in view (content-visibility in mail.css)."""
    if len(pieces) == 1:
        return clean_html(pieces[0])
    return format_html_join("", '<div class="narrative-part">{}</div>',
                            ((clean_html(piece),) for piece in pieces))


def _estimate(text: ET.Element) -> int:
    """About the length of the narrative's HTML, counted in C without converting it (some 0.1 s
    for 20 MB), so that the page does not convert a section only to find it too long."""
    elements = sum(1 for _ in text.iter())
    return sum(map(len, text.itertext())) + 12 * elements


def _rows(text: ET.Element | None) -> int:
    return 0 if text is None else sum(1 for _ in text.iter(V3 + "tr"))


def _raw_sections(
    container: ET.Element, level: int
) -> Iterator[tuple[str, ET.Element | None, int]]:
    for component in container.findall(V3 + "component"):
        section = component.find(V3 + "section")
        if section is None:
            continue
        title = _text(section.find(V3 + "title")) or "Untitled section"
        yield title, section.find(V3 + "text"), level
        yield from _raw_sections(section, level + 1)


def _all_sections(body: ET.Element) -> list[tuple[str, ET.Element | None, int]]:
    found = list(islice(_raw_sections(body, 1), MAX_SECTIONS + 1))
    if len(found) > MAX_SECTIONS:
        raise DocumentError("too-large", "The document has too many sections to show.")
    return found


def _shown(text: ET.Element, limit: int) -> SafeString:
    """The narrative as sanitised HTML within ``limit`` characters, before and after nh3 (which
    adds rel="noopener noreferrer" to every link: some four times as long)."""
    html = _sanitised(_narrative(text, limit))
    if len(html) > limit:
        raise _too_large()
    return html


def _within(text: ET.Element, budget: int) -> SafeString | None:
    """The narrative, or None when it does not fit the budget."""
    if _estimate(text) > budget:
        return None
    try:
        return _shown(text, budget)
    except DocumentError:
        return None  # larger than it looked: the estimate only spares most of the work


def _page_sections(body: ET.Element) -> list[Section]:
    """Every section, those within PAGE_HTML_CHARS (in document order) with their narrative."""
    sections = []
    budget = PAGE_HTML_CHARS
    for index, (title, text, level) in enumerate(_all_sections(body)):
        html = _within(text, budget) if text is not None else SafeString("")
        budget -= len(html or "")
        sections.append(Section(title=title, html=html, level=level, index=index,
                                rows=_rows(text)))
    return sections


def _one_section(body: ET.Element, index: int) -> Section:
    found = _all_sections(body)
    if index >= len(found):
        raise DocumentError("no-such-section", "The document has no such section.")
    title, text, level = found[index]
    html = _shown(text, SECTION_HTML_CHARS) if text is not None else SafeString("")
    return Section(title=title, html=html, level=level, index=index, rows=_rows(text))


def parse_cda(data: bytes, *, section: int | None = None) -> CdaDocument:
    """The document as the page shows it or, given ``section`` (an index), with that section
    alone, however large (up to SECTION_HTML_CHARS)."""
    if len(data) > MAX_CDA_BYTES:
        raise DocumentError("too-large", "The document is too large to show.")
    _refuse_declarations(data)
    try:
        root = ET.fromstring(data)  # noqa: S314 - DTDs and entities refused above
    except ET.ParseError as exc:
        raise DocumentError("malformed", "The document is not well-formed XML.") from exc
    if root.tag != V3 + "ClinicalDocument":
        raise DocumentError("not-cda", "This XML file is not an HL7 CDA document.")
    role = root.find(f"{V3}recordTarget/{V3}patientRole")
    patient = role.find(V3 + "patient") if role is not None else None
    gender = patient.find(V3 + "administrativeGenderCode") if patient is not None else None
    ids = tuple(
        i.get("extension", "") for i in (role.findall(V3 + "id") if role is not None else [])
        if i.get("extension")
    )
    author = root.find(f"{V3}author/{V3}assignedAuthor")
    body = root.find(f"{V3}component/{V3}structuredBody")
    non_xml = root.find(f"{V3}component/{V3}nonXMLBody")
    if body is not None:
        sections = [_one_section(body, section)] if section is not None else _page_sections(body)
    elif section is not None:
        raise DocumentError("no-such-section", "The document has no such section.")
    else:
        sections = []
    if non_xml is not None and not sections:
        sections = [Section(title="Document body (not structured)",
                            html=clean_html(escape(_text(non_xml.find(V3 + "text")))))]
    return CdaDocument(
        title=_text(root.find(V3 + "title")) or "Clinical document",
        patient_name=_name(patient.find(V3 + "name")) if patient is not None else "",
        patient_birth=_ts(patient.find(V3 + "birthTime")) if patient is not None else "",
        patient_gender=(gender.get("displayName") or gender.get("code") or "") if gender is not None else "",
        patient_ids=ids,
        author_name=_name(author.find(f"{V3}assignedPerson/{V3}name")) if author is not None else "",
        author_organisation=_name(author.find(f"{V3}representedOrganization/{V3}name"))
        if author is not None else "",
        date=_ts(root.find(V3 + "effectiveTime")),
        sections=tuple(sections),
    )
