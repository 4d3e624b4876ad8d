"""Long, legitimate C-CDA documents are shown, not refused: the page converts sections up to
PAGE_HTML_CHARS and collapses the long ones; each section too long for the page opens alone
(?section=n), with the checks and the audit of the page. Hostile documents: test_hostile_documents.py.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from hisp.models import AuditEvent
from tests.factories import MailboxEntryFactory, MessageFactory
from tests.webmail.large_cda import FOOTER, SHORT_SECTIONS, cda_of_size, large_cda
from tests.webmail.test_message import _xdm
from webmail.cda import CHUNK_CHARS, DocumentError, parse_cda

CCD = (Path(__file__).parent / "data" / "ccd.xml").read_bytes()
RESULTS = 3  # index of the first results section: after Allergies, Problems and Medications
_ROW = re.compile(r"<tr>(?:(?!<th>).)*?</tr>", re.DOTALL)


def _rows(html: str) -> list[str]:
    """The table's body rows (head rows left out)."""
    return _ROW.findall(html)


# --- The parser --------------------------------------------------------------------------------


def test_a_long_table_is_shown_in_pieces_that_each_repeat_the_head(monkeypatch):
    data = large_cda(sections=1, rows=2000, entries=False)
    [pieces] = parse_cda(data, section=RESULTS).sections
    monkeypatch.setattr("webmail.cda.CHUNK_CHARS", 10**9)
    [whole] = parse_cda(data, section=RESULTS).sections
    parts = pieces.html.split('<div class="narrative-part">')[1:]
    assert len(parts) > 5
    assert all(part.count("<thead><tr><th>Test</th>") == 1 for part in parts)
    assert all(len(part) < 2 * CHUNK_CHARS for part in parts)
    assert len(_rows(whole.html)) == 2000
    assert _rows(pieces.html) == _rows(whole.html)


def test_a_long_ordered_list_goes_on_numbering_in_each_piece():
    items = b"".join(b"<item>Problem %d, resolved</item>" % n for n in range(1, 3001))
    data = (
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><component><structuredBody><component>'
        b'<section><title>Problems</title><text><list listType="ordered">'
        + items
        + b"</list></text></section></component></structuredBody></component>"
        b"</ClinicalDocument>"
    )
    [section] = parse_cda(data, section=0).sections
    starts = [int(n) for n in re.findall(r'<ol start="(\d+)">', section.html)]
    assert len(starts) > 3
    for start in starts:  # each piece's list starts with the item it holds first
        assert f'<ol start="{start}"><li>Problem {start}, resolved</li>' in section.html
    assert section.html.count("<li>") == 3000


def test_a_row_longer_than_a_piece_is_cut_too():
    """Rows and list items are kept whole when they can be; a hostile one is not."""
    cells = b"<td>x</td>" * 20_000
    data = (
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><component><structuredBody><component>'
        b"<section><title>t</title><text><table><tbody><tr>"
        + cells
        + b"</tr></tbody></table></text></section></component></structuredBody></component>"
        b"</ClinicalDocument>"
    )
    [section] = parse_cda(data, section=0).sections
    parts = section.html.split('<div class="narrative-part">')[1:]
    assert len(parts) > 3
    assert all(len(part) < 2 * CHUNK_CHARS for part in parts)
    assert section.html.count("<td>x</td>") == 20_000


def test_a_short_narrative_is_one_piece():
    sections = parse_cda(CCD).sections
    assert all("narrative-part" not in s.html for s in sections)
    assert not any(s.collapsed for s in sections)


def test_the_page_converts_sections_within_its_budget_and_leaves_the_others(monkeypatch):
    monkeypatch.setattr("webmail.cda.PAGE_HTML_CHARS", 250_000)
    data = large_cda(sections=5, rows=600, entries=False)  # some 68 KB of HTML a section
    data = data.replace(FOOTER, SHORT_SECTIONS + FOOTER)
    sections = parse_cda(data).sections
    shown = [s.html is not None for s in sections]
    # The three short sections, three results within the budget, two not, then short ones again.
    assert shown == [True] * 6 + [False] * 2 + [True] * 3
    assert [s.index for s in sections] == list(range(11))
    assert sections[6].rows == 601  # with the head's row
    assert sections[3].collapsed and not sections[0].collapsed
    alone = parse_cda(data, section=6)
    assert alone.patient_name == "Isabella Isa Jones"
    [section] = alone.sections
    assert (section.index, section.title) == (6, "Results, panel 4")
    assert len(_rows(section.html)) == 600


def test_a_section_that_is_not_there_is_its_own_error():
    for data, index in [(CCD, 3), (CCD, 1000)]:
        with pytest.raises(DocumentError) as caught:
            parse_cda(data, section=index)
        assert caught.value.code == "no-such-section"
    assert parse_cda(CCD, section=2).sections[0].title == "Problem details"


def test_the_bound_on_sections_holds_for_one_section_too():
    section = b"<component><section><title>t</title><text>x</text></section></component>"
    data = (
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><component><structuredBody>'
        + section * 1001
        + b"</structuredBody></component></ClinicalDocument>"
    )
    with pytest.raises(DocumentError) as caught:
        parse_cda(data, section=0)
    assert caught.value.code == "too-large"


def test_a_record_at_the_size_limit_is_shown_whole_within_a_generous_cpu_bound():
    """20 results sections of 500 rows with their coded entries (19 MB): was refused."""
    data = cda_of_size(19.5)
    started = time.process_time()
    document = parse_cda(data)
    assert time.process_time() - started < 15
    assert len(data) > 19 * 1024 * 1024
    assert len(document.sections) == 23
    assert all(s.html is not None for s in document.sections)
    assert sum(len(_rows(s.html)) for s in document.sections) > 10_000


# --- The pages ---------------------------------------------------------------------------------


def _document(alice, data: bytes) -> str:
    """The path of the document page of a message carrying ``data``."""
    message = MessageFactory(attachments=[("record.xml", "text/xml", data)])
    entry = MailboxEntryFactory(address=alice.address, message=message)
    return f"/mail/m/{entry.pk}/attachments/1/view/"


@pytest.fixture
def long_record(alice) -> str:
    # 40,000 result rows (8 MB): their narrative is 4.5 MB of HTML, past the page's 4 MB.
    return _document(alice, large_cda(sections=20, rows=2000, entries=False))


def test_a_long_record_is_shown_with_contents_and_opens_section_by_section(
    alice, alice_client, long_record
):
    page = alice_client.get(long_record)
    body = page.content.decode()
    assert "error" not in page.context
    assert '<dd id="cda-patient">Isabella Isa Jones</dd>' in body
    assert 'aria-labelledby="contents-title"' in body
    assert '<details class="section-long" id="section-3-body">' in body
    pending = [s.index for s in page.context["document"].sections if s.html is None]
    assert pending and pending[-1] == 22
    assert f'href="{long_record}?section=22"' in body
    assert f'hx-get="{long_record}?section=22" hx-select="#section-22-body"' in body

    section = alice_client.get(long_record, {"section": 22})
    assert section.status_code == 200
    assert [s.title for s in section.context["document"].sections] == ["Results, panel 20"]
    assert len(_rows(section.content.decode())) == 2000
    assert b'id="section-22-body" tabindex="-1" autofocus>' in section.content
    views = AuditEvent.objects.filter(action="attachment.view").order_by("id")
    assert [e.detail for e in views] == [{"part": 1}, {"part": 1, "section": 22}]
    assert all(e.actor == alice.user for e in views)


def test_an_outsider_gets_404_for_a_section_and_nothing_is_audited(charlie_client, long_record):
    assert charlie_client.get(long_record, {"section": 22}).status_code == 404
    assert not AuditEvent.objects.filter(action="attachment.view").exists()


@pytest.mark.parametrize("value", ["abc", "-1", "1e3", "99999", "\u0663", "", "23"])
def test_a_section_that_is_not_there_is_404(alice, alice_client, value):
    path = _document(alice, large_cda(sections=20, rows=1, entries=False))
    assert alice_client.get(path, {"section": value}).status_code == 404


def test_a_section_of_a_document_in_an_xdm_package_opens_alone(alice, alice_client):
    package = _xdm({"IHE_XDM/SUBSET01/DOC0001.XML": CCD})
    message = MessageFactory(attachments=[("xdm.zip", "application/zip", package)])
    entry = MailboxEntryFactory(address=alice.address, message=message)
    member = (
        alice_client.get(f"/mail/m/{entry.pk}/attachments/1/view/")
        .context["xdm_documents"][0]
        .index
    )
    path = f"/mail/m/{entry.pk}/attachments/1/xdm/{member}/"
    page = alice_client.get(path, {"section": 1})
    assert [s.title for s in page.context["document"].sections] == ["Problems"]
    assert f'href="{path}#section-1">Show the whole document' in page.content.decode()
    event = AuditEvent.objects.filter(action="attachment.view").latest("id")
    assert event.detail == {"part": 1, "member": member, "section": 1}
    assert alice_client.get(path, {"section": 3}).status_code == 404
    downloaded = alice_client.get(path, {"section": 1, "download": "1"})
    assert downloaded["Content-Disposition"].startswith("attachment")
    event = AuditEvent.objects.filter(action="attachment.view").latest("id")
    assert event.detail == {"part": 1, "member": member}  # a download is of the whole file
