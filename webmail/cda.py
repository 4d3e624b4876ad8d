"""A readable view of an HL7 CDA R2 document (C-CDA): header facts and each section's narrative.

The XML is parsed only after a first pass refuses any DOCTYPE or entity declaration, so no
external entity is fetched and no entity expansion bomb runs (the defence defusedxml applies).
The narrative block (CDA R2 section 4.3.5) is mapped element by element to HTML and then
sanitised by nh3 like any mail HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from xml.etree import ElementTree as ET
from xml.parsers import expat

from django.utils.safestring import SafeString

from webmail.sanitise import clean_html

MAX_CDA_BYTES = 20 * 1024 * 1024
# Real C-CDA documents nest a few dozen elements deep; well below Python's recursion limit.
MAX_DEPTH = 200
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

    def refuse(*_args: object) -> None:
        raise DocumentError("dtd-forbidden", "The document declares a DTD or entities; refused.")

    def start(*_args: object) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise DocumentError("too-deep", "The document is nested too deeply to show.")

    def end(*_args: object) -> None:
        nonlocal depth
        depth -= 1

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


def _narrative(element: ET.Element) -> str:
    out: list[str] = []

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
            out.append(f"<{html_tag}{attrs}>")
        if node.text:
            out.append(escape(node.text))
        for child in node:
            walk(child)
            if child.tail:
                out.append(escape(child.tail))
        if html_tag and html_tag not in ("br", "col"):
            out.append(f"</{html_tag}>")

    if element.text:
        out.append(escape(element.text))
    for child in element:
        walk(child)
        if child.tail:
            out.append(escape(child.tail))
    return "".join(out)


def _sections(container: ET.Element, level: int) -> list[Section]:
    found: list[Section] = []
    for component in container.findall(V3 + "component"):
        section = component.find(V3 + "section")
        if section is None:
            continue
        text = section.find(V3 + "text")
        found.append(
            Section(
                title=_text(section.find(V3 + "title")) or "Untitled section",
                html=clean_html(_narrative(text)) if text is not None else clean_html(""),
                level=level,
            )
        )
        found.extend(_sections(section, level + 1))
    return found


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
