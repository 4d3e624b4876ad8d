"""C-CDA documents, XDM packages, HTML and MIME that a trusted partner (or a broken one) can send
inside a valid signature: each parser fails only with its own error and the pages answer 200,
never 500 or a hang (found by fuzzing webmail.cda, webmail.xdm, webmail.sanitise and
webmail.content)."""

from __future__ import annotations

import io
import struct
import time
import zipfile
from pathlib import Path

import pytest

from tests.factories import MailboxEntryFactory, MessageFactory
from webmail.cda import DocumentError, parse_cda
from webmail.content import open_bytes
from webmail.sanitise import clean_html, renderable
from webmail.xdm import ArchiveError, documents, read_document

CCD = (Path(__file__).parent / "data" / "ccd.xml").read_bytes()
OPEN = b'<ClinicalDocument xmlns="urn:hl7-org:v3">'
CLOSE = b"</ClinicalDocument>"


def _sections(count: int, text: bytes = b"x") -> bytes:
    section = b"<component><section><title>t</title><text>" + text + b"</text></section></component>"
    return (OPEN + b"<component><structuredBody>" + section * count
            + b"</structuredBody></component>" + CLOSE)


HOSTILE_CDA = {
    # expat asks Python for a codec its XML declaration names: LookupError, UnicodeError.
    "unknown-encoding": (b'<?xml version="1.0" encoding="bogus"?>' + OPEN + CLOSE, "malformed"),
    "codec-not-a-charset": (b'<?xml version="1.0" encoding="idna"?>' + OPEN + CLOSE, "malformed"),
    # The depth error is a ValueError too: it must keep its own code.
    "too-deep": (OPEN + b"<a>" * 300 + b"</a>" * 300 + CLOSE, "too-deep"),
    # Each section is one nh3 call: 200,000 of them took minutes (MAX_SECTIONS is 1000).
    "many-sections": (_sections(1001), "too-large"),
    # expat slows down with every new attribute name: 20 MB of them took 10-30 s (bounds:
    # MAX_ATTRIBUTE_NAMES 10,000, MAX_TAG_BYTES 1 MiB).
    "many-attribute-names": (OPEN + b"".join(
        b'<c a%d="x"/>' % i for i in range(10_001)) + CLOSE, "too-complex"),
    "huge-tag": (OPEN + b"<c " + b'a="x" ' * 180_000 + b"/>" + CLOSE,
                 "too-complex"),
}


@pytest.mark.parametrize("name", HOSTILE_CDA)
def test_a_hostile_cda_is_refused_with_its_code(name):
    data, code = HOSTILE_CDA[name]
    with pytest.raises(DocumentError) as caught:
        parse_cda(data)
    assert caught.value.code == code


def test_a_long_run_of_attribute_names_is_refused_before_it_is_slow():
    data = OPEN + b"".join(b'<c a%d="x" b%d="y"/>' % (i, i) for i in range(400_000)) + CLOSE
    started = time.monotonic()
    with pytest.raises(DocumentError):
        parse_cda(data)
    assert time.monotonic() - started < 2


# A narrative too long for the page is converted only when its section is opened alone, for nh3
# in pieces of CHUNK_CHARS, and refused past SECTION_HTML_CHARS.
def test_a_narrative_too_long_for_the_page_is_not_converted_with_it():
    [section] = parse_cda(_sections(1, b"<td>x</td>" * 500_000)).sections
    assert section.html is None


def test_a_narrative_longer_as_html_than_any_document_is_refused_when_opened():
    data = _sections(1, b"<paragraph>" + b">" * 6_000_000 + b"</paragraph>")  # each ">" is "&gt;"
    with pytest.raises(DocumentError) as caught:
        parse_cda(data, section=0)
    assert caught.value.code == "too-large"


def test_links_are_measured_after_nh3_lengthens_them(monkeypatch):
    # nh3 adds rel="noopener noreferrer" to each link: 80 KB of them come out at 350 KB.
    monkeypatch.setattr("webmail.cda.SECTION_HTML_CHARS", 100_000)
    data = _sections(1, b"<linkHtml>x</linkHtml>" * 10_000)
    with pytest.raises(DocumentError) as caught:
        parse_cda(data, section=0)
    assert caught.value.code == "too-large"


def test_text_straight_inside_a_table_is_sanitised_in_linear_time():
    """html5ever moves each text and element out before the table, quadratic in one nh3 call
    (these 2 MB took 7 s); in pieces of CHUNK_CHARS, 0.6 s."""
    data = _sections(1, b"<table>" + b"x<content>x</content>" * 100_000 + b"</table>")
    started = time.process_time()
    [section] = parse_cda(data, section=0).sections
    assert time.process_time() - started < 3
    assert section.html.count("<span>x</span>") == 100_000


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _patched(data: bytes, signature: bytes, offset: int, value: bytes) -> bytes:
    at = data.index(signature) + offset
    return data[:at] + value + data[at + len(value):]


DOC = "IHE_XDM/SUBSET01/DOC0001.XML"


def _corrupt_member(method: int) -> bytes:
    """A package whose document's compressed data is damaged after its first bytes."""
    package = _zip({DOC: CCD * 4}, method)
    start = package.index(b"PK\x03\x04") + 30 + len(DOC)
    return package[:start + 10] + b"\xff" * 40 + package[start + 50:]


HOSTILE_MEMBERS = {
    "deflate-corrupt": _corrupt_member(zipfile.ZIP_DEFLATED),  # zlib.error
    "lzma-corrupt": _corrupt_member(zipfile.ZIP_LZMA),  # lzma.LZMAError
    # A deflate stream cut short with the sizes still claiming it all: EOFError.
    "truncated-stream": _patched(_zip({DOC: CCD}, zipfile.ZIP_STORED), b"PK\x01\x02", 10,
                                 struct.pack("<H", zipfile.ZIP_DEFLATED)),
    # A local header offset pointing before the file: ValueError (negative seek value).
    "offset-before-start": _patched(_zip({DOC: CCD}), b"PK\x05\x06", 16,
                                    struct.pack("<I", 0x00FFFFFF)),
}


@pytest.mark.parametrize("name", HOSTILE_MEMBERS)
def test_a_damaged_member_is_an_archive_error(name):
    package = HOSTILE_MEMBERS[name]
    [document] = documents(package)
    with pytest.raises(ArchiveError) as caught:
        read_document(package, document.index)
    assert caught.value.code == "bad-zip"


def test_a_zip_version_zipfile_cannot_read_is_an_archive_error():
    package = _patched(_zip({DOC: CCD}), b"PK\x01\x02", 6, struct.pack("<H", 255))
    with pytest.raises(ArchiveError) as caught:
        documents(package)
    assert caught.value.code == "bad-zip"


def test_a_member_with_an_empty_name_is_left_out():
    """ZipInfo.is_dir() raised IndexError for it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(DOC, CCD)
        archive.writestr(zipfile.ZipInfo(""), b"x")
    assert [d.name for d in documents(buffer.getvalue())] == [DOC]


@pytest.mark.parametrize("html", ["\ud800<b>x</b>", "<p>a\udfffb\x00c</p>", "\x00", "\udc80"])
def test_clean_html_takes_any_str(html):
    cleaned = clean_html(html)
    cleaned.encode("utf-8")
    assert "\x00" not in cleaned


def test_an_unclosed_tag_is_measured_in_linear_time():
    """The tag pattern split a run after an unclosed "<" every way: quadratic, hours for 2 MB."""
    html = "<a" + "b;" * 100_000
    started = time.monotonic()
    assert renderable(html)
    assert time.monotonic() - started < 1


def _text_message(charset: str, body: bytes, subtype: str = "plain") -> bytes:
    return (b"From: dr.who@partner.example\r\nTo: alice@clinic.example\r\nSubject: s\r\n"
            b"Content-Type: text/" + subtype.encode() + b"; charset=" + charset.encode()
            + b"\r\n\r\n" + body + b"\r\n")


SURROGATE_TEXT = [("utf-7", b"+2AA- Potassium 4.1"), ("unicode_escape", b"\\udc80 Potassium 4.1")]


@pytest.mark.parametrize(("charset", "body"), SURROGATE_TEXT)
def test_a_charset_that_decodes_to_a_lone_surrogate_gives_text_that_encodes(charset, body):
    opened = open_bytes(_text_message(charset, body))
    assert opened.text.encode("utf-8").endswith(b"Potassium 4.1\r\n")
    html = open_bytes(_text_message(charset, body, "html")).html
    html.encode("utf-8")


def _nested(depth: int) -> bytes:
    return b"From: dr.who@partner.example\r\nSubject: s\r\n" + b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth)
    )


def test_a_message_nested_too_deeply_is_offered_whole_as_one_attachment():
    data = _nested(3000)
    opened = open_bytes(data)
    assert opened.headers["From"] == "dr.who@partner.example"
    [attachment] = opened.attachments
    assert data.endswith(attachment.data)


# --- The pages ---------------------------------------------------------------------------------

def _entry(alice, **message_fields):
    return MailboxEntryFactory(address=alice.address, message=MessageFactory(**message_fields))


@pytest.mark.parametrize("name", HOSTILE_CDA)
def test_the_page_of_a_hostile_cda_explains_the_refusal(alice, alice_client, name):
    entry = _entry(alice, attachments=[("ccd.xml", "text/xml", HOSTILE_CDA[name][0])])
    page = alice_client.get(f"/mail/m/{entry.pk}/")
    assert page.status_code == 200
    index = page.context["opened"].attachments[0].index
    view = alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/view/")
    assert view.status_code == 200
    assert view.context["error"]


def test_the_page_of_a_section_too_long_to_show_explains_the_refusal_in_its_place(
    alice, alice_client
):
    data = _sections(1, b"<paragraph>" + b">" * 6_000_000 + b"</paragraph>")
    entry = _entry(alice, attachments=[("ccd.xml", "text/xml", data)])
    index = alice_client.get(f"/mail/m/{entry.pk}/").context["opened"].attachments[0].index
    view = alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/view/?section=0")
    assert view.status_code == 200
    # The id is what the page that asked for the section (htmx) puts in the section's place.
    assert b'id="section-0-body">The document&#x27;s narrative is too large' in view.content


@pytest.mark.parametrize("name", HOSTILE_MEMBERS)
def test_the_page_of_a_damaged_xdm_document_is_a_clear_error(alice, alice_client, name):
    package = HOSTILE_MEMBERS[name]
    entry = _entry(alice, attachments=[("xdm.zip", "application/zip", package)])
    index = alice_client.get(f"/mail/m/{entry.pk}/").context["opened"].attachments[0].index
    listing = alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/view/")
    assert listing.status_code == 200
    member = listing.context["xdm_documents"][0].index
    page = alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/xdm/{member}/")
    assert page.status_code == 422
    assert b"cannot be read" in page.content


def test_the_page_of_an_unreadable_zip_version_is_a_clear_error(alice, alice_client):
    package = _patched(_zip({DOC: CCD}), b"PK\x01\x02", 6, struct.pack("<H", 255))
    entry = _entry(alice, attachments=[("xdm.zip", "application/zip", package)])
    index = alice_client.get(f"/mail/m/{entry.pk}/").context["opened"].attachments[0].index
    listing = alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/view/")
    assert listing.status_code == 200
    assert b"not a readable zip" in listing.content


@pytest.mark.parametrize(("charset", "body"), SURROGATE_TEXT)
@pytest.mark.parametrize("subtype", ["plain", "html"])
def test_the_page_of_text_decoding_to_a_lone_surrogate_opens(alice, alice_client, charset, body,
                                                             subtype):
    entry = _entry(alice, content=_text_message(charset, body, subtype))
    page = alice_client.get(f"/mail/m/{entry.pk}/")
    assert page.status_code == 200
    assert "Potassium 4.1" in page.content.decode()


def test_the_page_of_a_message_nested_too_deeply_opens(alice, alice_client):
    entry = _entry(alice, content=_nested(3000))
    page = alice_client.get(f"/mail/m/{entry.pk}/")
    assert page.status_code == 200
    assert alice_client.get(f"/mail/m/{entry.pk}/attachments/0/").status_code == 200
