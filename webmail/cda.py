"""A readable view of an HL7 CDA R2 document (C-CDA): header facts and each section's narrative.

The XML is parsed only after a first pass refuses any DOCTYPE or entity declaration, so no
external entity is fetched and no entity expansion bomb runs (the defence defusedxml applies).
The narrative block (CDA R2 section 4.3.5) is mapped element by element to HTML and then
sanitised by nh3 like any mail HTML.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import escape
from xml.etree import ElementTree as ET
from xml.parsers import expat

from django.utils.safestring import SafeString

from webmail.sanitise import MAX_HTML_CHARS, clean_html

MAX_CDA_BYTES = 20 * 1024 * 1024
# Real C-CDA documents nest a few dozen elements deep; well below Python's recursion limit.
MAX_DEPTH = 200
# Each section's narrative is sanitised by its own nh3 call (some 0.2 ms each, plus time linear
# in the HTML): 200,000 tiny sections took minutes, 300,000 table cells (8 MB) 40 s. Real
# documents have tens of sections; the narrative gets the bound mail HTML has (renderable).
MAX_SECTIONS = 1000
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


class DocumentError(ValueError):
    """Not a CDA document we can show; ``code`` is stable, the text is for the user."""

    def __init__(self, code: str, text: str) -> None:
        self.code = code
        super().__init__(text)


@dataclass(frozen=True)
class Section:
    title: str
    html: SafeString
    level: int = 1


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


def _narrative(element: ET.Element, limit: int) -> str:
    """The narrative block as HTML; DocumentError once it passes ``limit`` characters."""
    out: list[str] = []
    size = 0

    def emit(piece: str) -> None:
        nonlocal size
        size += len(piece)
        if size > limit:
            raise _too_large()
        out.append(piece)

    def walk(node: ET.Element) -> None:
        tag = node.tag.removeprefix(V3) if isinstance(node.tag, str) else ""
        if tag == "list":
            html_tag = "ol" if node.get("listType") == "ordered" else "ul"
        elif tag in ("renderMultiMedia",):
            html_tag = ""  # references to observation media: nothing to show inline
        else:
            html_tag = _NARRATIVE.get(tag, "span")
        if html_tag:
            attrs = ""
            if html_tag in ("td", "th"):
                attrs = "".join(
                    f' {a}="{escape(node.get(a, ""))}"' for a in _CELL_ATTRIBUTES if node.get(a)
                )
            elif html_tag == "a" and node.get("href", "").startswith(("http://", "https://")):
                attrs = f' href="{escape(node.get("href", ""))}"'
            emit(f"<{html_tag}{attrs}>")
        if node.text:
            emit(escape(node.text))
        for child in node:
            walk(child)
            if child.tail:
                emit(escape(child.tail))
        if html_tag and html_tag not in ("br", "col"):
            emit(f"</{html_tag}>")

    if element.text:
        emit(escape(element.text))
    for child in element:
        walk(child)
        if child.tail:
            emit(escape(child.tail))
    return "".join(out)


def _sections(container: ET.Element, level: int) -> list[Section]:
    """The sections, within bounds (MAX_SECTIONS, MAX_HTML_CHARS of narrative in all) checked
    as they are read, so an oversized document is refused before most of its cost."""
    found: list[tuple[str, str, int]] = []
    budget = MAX_HTML_CHARS
    for title, text, lvl in _raw_sections(container, level):
        html = _narrative(text, budget) if text is not None else ""
        budget -= len(html)
        found.append((title, html, lvl))
        if len(found) > MAX_SECTIONS:
            raise _too_large()
    return [Section(title=title, html=clean_html(html), level=lvl) for title, html, lvl in found]


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


def parse_cda(data: bytes) -> CdaDocument:
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
    sections = _sections(body, 1) if body is not None else []
    if non_xml is not None and not sections:
        sections = [Section(title="Document body (not structured)",
                            html=clean_html(escape(_text(non_xml.find(V3 + "text")))))]
    return CdaDocument(
        title=_text(root.find(V3 + "title")) or "Clinical document",
        patient_name=_name(patient.find(V3 + "name")) if patient is not None else "",
        patient_birth=_ts(patient.find(V3 + "birthTime")) if patient is not None else "",
        patient_gender=(gender.get("displayName") or gender.get("code", "")) if gender is not None else "",
        patient_ids=ids,
        author_name=_name(author.find(f"{V3}assignedPerson/{V3}name")) if author is not None else "",
        author_organisation=_name(author.find(f"{V3}representedOrganization/{V3}name"))
        if author is not None else "",
        date=_ts(root.find(V3 + "effectiveTime")),
        sections=tuple(sections),
    )
