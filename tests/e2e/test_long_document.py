"""In Chromium: a long C-CDA shows its header facts and contents at once, its long sections
collapsed, and a section too long for the page opens in place (htmx) with the focus on it; the
page passes axe before and after."""

from __future__ import annotations

import pytest

from hisp.models import AuditEvent
from tests.e2e.test_accessibility_webmail import Audit
from tests.e2e.test_webmail import sign_in
from tests.factories import MailboxEntryFactory, MessageFactory
from tests.webmail.large_cda import large_cda
from tests.webmail.personas import make_persona

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_long_record_opens_a_section_too_long_for_the_page_in_place(page, monkeypatch):
    # Three results sections of 120 rows (13.5 KB of HTML each), with the bounds scaled down
    # so that axe has few rows to check: one section fits the page, in pieces, collapsed.
    monkeypatch.setattr("webmail.cda.PAGE_HTML_CHARS", 20_000)
    monkeypatch.setattr("webmail.cda.COLLAPSE_CHARS", 10_000)
    monkeypatch.setattr("webmail.cda.CHUNK_CHARS", 4096)
    alice = make_persona("alice", "clinic.example")
    message = MessageFactory(
        subject="Longitudinal record",
        attachments=[("record.xml", "text/xml", large_cda(sections=3, rows=120, entries=False))],
    )
    MailboxEntryFactory(
        address=alice.address, message=message, subject="Longitudinal record", has_attachments=True
    )
    sign_in(page, alice)
    page.get_by_role("link", name="Longitudinal record").click()
    page.get_by_role("link", name="View clinical document").click()
    assert page.locator("#cda-patient").inner_text() == "Isabella Isa Jones"
    audit = Audit(page)
    audit.check("long C-CDA document")
    contents = page.get_by_role("navigation", name="Contents")
    assert contents.get_by_role("link").count() == 6

    collapsed = page.locator("#section-3-body")
    assert not collapsed.locator("table").first.is_visible()
    collapsed.locator("summary").click()
    assert collapsed.get_by_role("cell", name="Glucose").first.is_visible()
    assert collapsed.locator(".narrative-part thead").count() > 1

    path = page.url
    page.locator("#section-5-body").get_by_role("link", name="Open this section").click()
    opened = page.locator("#section-5-body")
    opened.get_by_role("cell", name="Glucose").first.wait_for()
    assert page.evaluate("document.activeElement.id") == "section-5-body"
    assert opened.locator("thead").first.is_visible()
    assert page.url == path
    assert page.locator(".section-pending#section-4-body").count() == 1
    assert AuditEvent.objects.filter(action="attachment.view", detail__section=5).count() == 1
    audit.check("long C-CDA document with a section opened in place")
    audit.assert_clean()
