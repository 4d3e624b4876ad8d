"""In headless Chromium, the console flows added or changed by the operator's review: removing a
trust bundle (confirmed, with a reason), exporting the audit log as CSV from the filtered log,
and following a dashboard count to the messages it counted. Each page passes axe and shows no
CSP violation or script error."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from django.utils import timezone

from hisp.models import AuditEvent, Domain, Message, TrustAnchor, TrustBundle
from hisp.services import audit, trust
from tests.adminconsole import pkitools
from tests.e2e.test_accessibility_console import axe_problems
from tests.e2e.test_console import audit_rows, console, hosted, nav, refused_unticked, sam

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
__all__ = ["console", "hosted", "sam"]  # fixtures used by name


def test_a_bundle_is_removed_after_a_confirmation_with_a_reason(console, hosted: Domain) -> None:
    page = console.page
    members = [pkitools.make_ca("Community Member One CA"), pkitools.make_ca("Community Member Two CA")]
    body = pkcs7.serialize_certificates([m.certificate for m in members], Encoding.DER)
    trust.add_bundle(body, domain=hosted.name, name="Regional community")
    nav(page, "Bundles")
    page.get_by_role("link", name="Regional community", exact=True).click()
    page.get_by_role("link", name="Remove this bundle…").click()
    page.get_by_role("heading", name="Remove the bundle Regional community from "
                                     "clinic.example.com").wait_for()
    assert "stops trusting the 2 anchors from this bundle" in page.content()
    problems = axe_problems(page, "bundle removal confirmation")
    page.get_by_label("Reason").fill("we left the regional community")
    page.get_by_role("button", name="Remove the bundle").click()
    refused_unticked(page)
    assert TrustBundle.objects.count() == 1
    page.get_by_label("I understand that clinic.example.com stops trusting the anchors of "
                      "Regional community now.").check()
    page.get_by_role("button", name="Remove the bundle").click()
    page.get_by_role("heading", name="Trust bundles").wait_for()
    page.get_by_text("Bundle Regional community removed").wait_for()
    assert not TrustBundle.objects.exists() and not TrustAnchor.objects.filter(
        bundle__isnull=False).exists()
    assert "bundle.remove" in " ".join(audit_rows(page, Action="bundle."))
    assert problems == []
    console.clean()


def test_the_filtered_audit_log_is_exported_as_csv(console, hosted: Domain) -> None:
    page = console.page
    for n in range(3):
        audit.record(action="route.set", obj=("route", f"r{n}"), actor=None)
    audit_rows(page, Action="route.")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export these events as CSV").click()
    assert download.value.suggested_filename.startswith("audit-")
    with open(download.value.path(), encoding="utf-8") as exported:
        rows = list(csv.reader(io.StringIO(exported.read())))
    assert [row[2] for row in rows[1:]] == ["route.set"] * 3
    assert AuditEvent.objects.get(action="audit.export").detail["filters"] == {"action": "route."}
    console.clean()


def test_a_dashboard_message_count_leads_to_the_messages_counted(console) -> None:
    page = console.page
    for n, age in enumerate((timedelta(hours=1), timedelta(days=2))):
        message = Message.objects.create(
            direction=Message.Direction.OUTBOUND, state=Message.State.FAILED, raw=b"x",
            message_id=f"<e2e{n}@clinic.example.com>", envelope_from="a@clinic.example.com",
        )
        Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - age)
    nav(page, "Dashboard")
    page.get_by_role("link", name="1 outbound, failed").click()
    page.get_by_role("heading", name="Messages").wait_for()
    rows = page.locator("table.list tbody tr").all_inner_texts()
    assert len(rows) == 1 and "e2e0@clinic.example.com" in rows[0]
    assert page.get_by_label("Received or sent").input_value() == "24h"
    assert axe_problems(page, "messages of the last 24 hours") == []
    console.clean()
