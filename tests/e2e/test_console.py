"""End to end in headless Chromium: a HISP staff member works through the admin console as they
would at their desk. Signs in with both factors, onboards a provider (domain, address, identity
proofing, activation), issues and revokes its certificate, imports and removes a partner's trust
anchor, looks through the queues and the audit log; and a webmail user who types console URLs
sees nothing of it.

Every staff page is checked for CSP violations and script errors: the console has no inline
script or style, and a page that breaks in the browser is a page staff cannot use."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from adminconsole.roles import Role, role_groups
from hisp.models import (
    Address,
    AddressGrant,
    AuditEvent,
    Certificate,
    Delivery,
    DeliveryEvent,
    Domain,
    Message,
    TrustAnchor,
)
from hisp.services import identity
from tests.adminconsole import pkitools
from tests.adminconsole.test_access import GET_VIEWS, VIEWS
from tests.adminconsole.world import build
from tests.e2e.watch import script_errors
from tests.webmail.otp import current_code

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
PASSWORD = "staff desk lamp 1984"
PHI_SUBJECT = "Patient Jane Roe DOB 1970-01-01"
PHI_BODY = "SECRET-BODY-TEXT"


class Watched:
    """A browser page with what went wrong in it: CSP violations, script errors, failed loads."""

    def __init__(self, page: object) -> None:
        self.page = page
        self.errors = script_errors(page)

    def clean(self) -> None:
        assert self.page.csp_problems == []
        assert self.errors == []


def sign_in(page: object, path: str, username: str, device: TOTPDevice) -> None:
    """From a console URL, through the sign-in form and the second factor."""
    page.goto(path)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("6-digit code").fill(current_code(device))
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def sam() -> tuple[object, TOTPDevice]:
    cache.clear()  # sign-in failure counts per client IP outlive other tests' databases
    user = get_user_model().objects.create_user("sam", password=PASSWORD, is_staff=True)
    user.groups.set(role_groups(Role))  # every console role (adminconsole.roles)
    return user, TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


@pytest.fixture
def console(page: object, sam: tuple[object, TOTPDevice]) -> Iterator[Watched]:
    """sam, signed in with both factors, on the dashboard."""
    watched = Watched(page)
    sign_in(page, "/console/", "sam", sam[1])
    page.get_by_role("heading", name="Dashboard").wait_for()
    yield watched


def nav(page: object, name: str) -> None:
    page.get_by_role("navigation", name="Admin console").get_by_role("link", name=name).click()


def refused_unticked(page: object) -> None:
    """A confirmation submitted without its tick stays on the page, the box marked as needed
    (the browser refuses the submission; the server refuses it too, in tests/adminconsole)."""
    box = page.get_by_role("checkbox")
    assert box.evaluate("e => e.required && !e.validity.valid")
    assert page.get_by_role("button", name=re.compile(".")).last.is_visible()


def audit_rows(page: object, **filters: str) -> list[str]:
    """The audit log filtered through its form, as the rows' text."""
    nav(page, "Audit log")
    page.get_by_role("heading", name="Audit log").wait_for()
    for label, value in filters.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()
    return page.locator("table.list tbody tr").all_inner_texts()


def test_sign_in_needs_the_second_factor_and_every_menu_page_loads_cleanly(page, sam):
    watched = Watched(page)
    page.goto("/console/")
    assert "/console/" not in page.url.split("?")[0]  # sent to sign in, nothing shown
    page.get_by_label("Username").fill("sam")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("6-digit code").wait_for()
    # Password alone is not enough: the console still sends staff back to the code.
    page.goto("/console/audit/")
    page.get_by_label("6-digit code").wait_for()
    assert "Audit log" not in page.content()
    assert not AuditEvent.objects.filter(action="audit.view").exists()
    page.get_by_label("6-digit code").fill(current_code(sam[1]))
    page.get_by_role("button", name="Sign in").click()
    # Back where the staff member was going.
    page.get_by_role("heading", name="Audit log").wait_for()

    nav(page, "Dashboard")
    page.get_by_role("heading", name="Dashboard").wait_for()
    for link, heading in [
        ("Domains", "Hosted domains"), ("Addresses", "Organisations and providers"),
        ("Certificates", "Certificates"), ("Anchors", "Trust anchors"), ("Bundles", None),
        ("Routes", None), ("Messages", "Messages"), ("Deliveries", "Deliveries"),
        ("Discovery", None), ("Audit log", "Audit log"), ("Dashboard", "Dashboard"),
    ]:
        nav(page, link)
        page.wait_for_load_state()
        current = page.get_by_role("navigation", name="Admin console").locator("[aria-current=page]")
        assert current.inner_text() == link
        if heading:
            assert page.get_by_role("heading", name=heading, exact=True).is_visible()
    watched.clean()


def test_provider_onboarding_certificate_issue_and_revocation(console):
    page = console.page
    # A domain, through the form.
    nav(page, "Domains")
    page.get_by_label("Domain name").fill("Clinic.Example.com.")
    page.get_by_label("Kind").select_option(label="Provider")
    page.get_by_role("button", name="Add domain").click()
    page.get_by_role("heading", name="clinic.example.com").wait_for()
    assert "clinic.example.com added with its CA and certificate." in page.content()
    domain = Domain.objects.get(name="clinic.example.com")
    assert domain.issuing_ca is not None

    # The same domain again: refused with a message beside the field, nothing created.
    nav(page, "Domains")
    page.get_by_label("Domain name").fill("clinic.example.com")
    page.get_by_role("button", name="Add domain").click()
    page.get_by_text("This domain is hosted already.").wait_for()
    assert Domain.objects.count() == 1
    console.errors.clear()  # the 400 of the refused form is logged by the browser

    # The provider's address, held back until proofed.
    nav(page, "Addresses")
    page.get_by_label("Direct address").fill("dr.who@clinic.example.com")
    page.get_by_label("Display name").fill("Dr Who")
    page.get_by_label("Issue an address-bound certificate").uncheck()
    page.get_by_label("Create a webmail user for it").uncheck()
    page.get_by_role("button", name="Add address").click()
    page.get_by_role("heading", name="dr.who@clinic.example.com").wait_for()
    address = Address.objects.get(address="dr.who@clinic.example.com")
    assert address.status == Address.Status.PENDING
    assert page.get_by_text("Not proofed yet: the address cannot be activated.").is_visible()

    # Activating before proofing is refused, with the reason on the page.
    page.get_by_role("button", name="Activate").click()
    page.get_by_text("record how this identity was proofed before activating it").wait_for()
    address.refresh_from_db()
    assert address.status == Address.Status.PENDING
    console.errors.clear()

    # A proofing date in the future is refused.
    page.get_by_label("Proofed by").fill("Front desk, R. Jones")
    page.get_by_label("Method").select_option(index=1)
    page.get_by_label("Evidence reference").fill("CASE-2026-17")
    page.get_by_label("Date proofed").fill((date.today() + timedelta(days=3)).isoformat())
    page.get_by_role("button", name="Record proofing").click()
    page.get_by_text("The proofing date cannot be in the future.").wait_for()
    assert not address.proofing_records.exists()
    console.errors.clear()

    page.get_by_label("Proofed by").fill("Front desk, R. Jones")
    page.get_by_label("Evidence reference").fill("CASE-2026-17")
    page.get_by_label("Date proofed").fill(date.today().isoformat())
    page.get_by_role("button", name="Record proofing").click()
    page.get_by_text("Proofing recorded.").wait_for()
    assert page.get_by_role("cell", name="CASE-2026-17").is_visible()
    page.get_by_role("button", name="Activate").click()
    page.get_by_text("dr.who@clinic.example.com is now active.").wait_for()
    address.refresh_from_db()
    assert address.status == Address.Status.ACTIVE

    # Issue its certificate from the address page: the form comes filled in.
    page.get_by_role("link", name="Issue an address-bound certificate…").click()
    page.get_by_role("heading", name="Issue a certificate").wait_for()
    assert page.get_by_label("Address or domain").input_value() == "dr.who@clinic.example.com"
    page.get_by_role("button", name="Issue").click()
    page.get_by_text(re.compile(r"Issued \d certificate\(s\) for dr.who@clinic.example.com")).wait_for()
    issued = Certificate.objects.filter(address=address, revoked_at__isnull=True)
    assert issued.exists()
    certificate = Certificate.objects.get(pk=int(page.url.rstrip("/").split("/")[-1]))
    assert certificate.address == address
    facts = page.locator("dl.facts").first.inner_text()
    assert "dr.who@clinic.example.com" in facts
    shown_fingerprint = page.locator("code.fingerprint").inner_text()
    assert shown_fingerprint.replace(":", "").lower() == certificate.fingerprint_sha256
    assert "yes (wrapped; never shown)" in page.content()

    # Revoke: the confirmation page first; no tick, nothing revoked.
    page.get_by_role("link", name="Revoke…").click()
    page.get_by_role("heading", name="Revoke the certificate for dr.who@clinic.example.com").wait_for()
    # What stops working is said before the tick: its only certificate, so partners fall back
    # to the domain's; and the box names what is revoked.
    effects = page.locator("ul.effects").inner_text()
    assert "dr.who@clinic.example.com has no other certificate of its own" in effects
    assert "renewing instead" in effects
    assert page.get_by_label("I understand that relying parties will reject the certificate "
                             "for dr.who@clinic.example.com from now on.").is_visible()
    page.get_by_label("Reason code").select_option(label="Key compromise")
    page.get_by_role("button", name="Revoke").click()
    refused_unticked(page)
    certificate.refresh_from_db()
    assert certificate.revoked_at is None
    # Cancel leaves it alone, too.
    page.get_by_role("link", name="Cancel").click()
    page.get_by_role("link", name="Revoke…").click()
    page.get_by_label("Reason code").select_option(label="Key compromise")
    page.get_by_label("Why (kept in the audit log)").fill("Laptop with the key was stolen")
    page.get_by_role("checkbox").check()
    page.get_by_role("button", name="Revoke").click()
    page.get_by_text("Certificate revoked; the CRL was regenerated.").wait_for()
    assert page.get_by_text("Key compromise").first.is_visible()
    assert not page.get_by_role("link", name="Revoke…").is_visible()
    certificate.refresh_from_db()
    assert certificate.revoked_at is not None
    assert certificate.revocation_reason == Certificate.RevocationReason.KEY_COMPROMISE
    assert AuditEvent.objects.get(action="certificate.revoke").detail["note"] == (
        "Laptop with the key was stolen")
    # Back to the confirmation page (browser history): it says it is done, with no form.
    page.go_back()
    page.get_by_text("This certificate was revoked on").wait_for()
    assert page.get_by_role("button", name="Revoke").count() == 0
    page.get_by_role("link", name="Back to the certificate").click()

    # The list shows it revoked; the filter finds it.
    nav(page, "Certificates")
    page.get_by_label("Revoked", exact=True).select_option(label="Revoked")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()
    rows = page.locator("table.list tbody tr").all_inner_texts()
    assert len(rows) == 1 and "dr.who@clinic.example.com" in rows[0] and "Revoked" in rows[0]

    # And the audit log has every step, with who did it.
    rows = audit_rows(page, Action="certificate.revoke")
    assert len(rows) == 1
    assert "sam" in rows[0] and "key_compromise" in rows[0].lower().replace(" ", "_")
    rows = audit_rows(page, Action="address.", Actor="sam")
    actions = " ".join(rows)
    for action in ("address.hold_for_proofing", "address.proofing_recorded", "address.activate"):
        assert action in actions
    console.clean()


@pytest.fixture
def hosted() -> Domain:
    return identity.add_domain("clinic.example.com")


@pytest.fixture
def partner_pem(tmp_path: Path) -> tuple[Path, pkitools.Made]:
    made = pkitools.make_ca("Partner Health HISP CA")
    path = tmp_path / "partner-anchor.pem"
    path.write_bytes(made.pem)
    return path, made


def test_partner_anchor_import_with_fingerprint_check_and_removal(console, hosted, partner_pem):
    page = console.page
    upload, made = partner_pem
    nav(page, "Anchors")
    page.get_by_role("link", name="Import a partner's anchor…").click()
    page.get_by_role("heading", name="Import a partner HISP's trust anchor").wait_for()
    page.get_by_label("Domain").select_option(label="clinic.example.com")
    page.get_by_label("Anchor certificate (PEM or DER)").set_input_files(str(upload))
    page.get_by_role("button", name="Show fingerprint").click()
    page.get_by_role("heading", name="Confirm the anchor for clinic.example.com").wait_for()
    shown = page.locator(".fingerprint-box code.fingerprint").inner_text()
    assert shown.replace(":", "").lower() == made.fingerprint
    assert "Partner Health HISP CA" in page.locator("dl.facts").inner_text()

    # The partner reads out a different fingerprint: nothing is imported.
    wrong = ("0" if made.fingerprint[0] != "0" else "1") + made.fingerprint[1:]
    page.get_by_label("SHA-256 fingerprint read out by the partner").fill(wrong)
    page.get_by_role("button", name="Fingerprints match: import").click()
    page.get_by_text("This does not match the certificate's fingerprint.").wait_for()
    assert not TrustAnchor.objects.filter(certificate__fingerprint_sha256=made.fingerprint).exists()
    console.errors.clear()

    # Typed as heard: upper case, in pairs with spaces.
    spoken = " ".join(made.fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()
    page.get_by_label("SHA-256 fingerprint read out by the partner").fill(spoken)
    page.get_by_role("button", name="Fingerprints match: import").click()
    page.get_by_text("Anchor imported for clinic.example.com.").wait_for()
    anchor = TrustAnchor.objects.get(certificate__fingerprint_sha256=made.fingerprint)
    assert anchor.domain == hosted and anchor.incoming and anchor.outgoing
    assert anchor.confirmed_fingerprint == made.fingerprint
    # A partner's CA is not ours to revoke: its revoke URL says so instead of offering a form.
    page.goto(f"/console/certificates/{anchor.certificate_id}/revoke/")
    page.get_by_text("Only certificates issued by this HISP can be revoked here.").wait_for()
    assert page.get_by_role("checkbox").count() == 0

    nav(page, "Anchors")
    row = page.locator("table.list tbody tr", has_text="Partner Health HISP CA")
    assert "fingerprint confirmed" in row.inner_text()
    # The domain's own CA is listed too, and cannot be removed from here.
    own = page.locator("table.list").first.locator("tbody tr").filter(has_not_text="Partner Health")
    assert own.count() >= 1
    assert own.get_by_role("link", name="Stop trusting…").count() == 0

    # Removal: a reason and a tick, on a page that says what stops working.
    row.get_by_role("link", name="Stop trusting…").click()
    page.wait_for_load_state()
    assert "Partner Health HISP CA" in page.content()
    page.locator("form.stacked button[type=submit]").click()
    refused_unticked(page)
    assert TrustAnchor.objects.filter(pk=anchor.pk).exists()
    page.get_by_label("Reason").fill("Partner left the trust community")
    page.get_by_role("checkbox").check()
    page.locator("form.stacked button[type=submit]").click()
    page.get_by_role("heading", name="Trust anchors").wait_for()
    assert page.get_by_text("no longer trusts").is_visible()
    assert not TrustAnchor.objects.filter(pk=anchor.pk).exists()
    assert page.locator("table.list tbody tr", has_text="Partner Health HISP CA").count() == 0

    rows = audit_rows(page, Action="anchor.")
    text = " ".join(rows)
    assert "anchor.import" in text or "anchor.add" in text, text
    assert "anchor.remove" in text and "Partner left the trust community" in text
    console.clean()


def test_a_malformed_anchor_upload_is_refused_with_a_clear_message(console, hosted, tmp_path):
    page = console.page
    junk = tmp_path / "not-a-cert.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    leaf_ca = pkitools.make_ca("Some CA")
    leaf = pkitools.make_leaf(leaf_ca, "someone@partner.example.net")
    leaf_file = tmp_path / "leaf.pem"
    leaf_file.write_bytes(leaf.pem)
    page.goto("/console/trust/anchors/import/")
    for path, message in [(junk, "Not a certificate"),
                          (leaf_file, "A trust anchor must be a CA certificate")]:
        page.get_by_label("Anchor certificate (PEM or DER)").set_input_files(str(path))
        page.get_by_role("button", name="Show fingerprint").click()
        page.get_by_text(message).wait_for()
        assert page.get_by_role("heading", name="Import a partner HISP's trust anchor").is_visible()
    assert TrustAnchor.objects.exclude(certificate=hosted.issuing_ca).count() == 0
    console.errors.clear()
    console.clean()


@pytest.fixture
def traffic(hosted: Domain) -> dict[str, object]:
    address = identity.add_address("alice@clinic.example.com", name="Dr Alice")
    sent = Message.objects.create(
        direction=Message.Direction.OUTBOUND, state=Message.State.SENT,
        message_id="<m1@clinic.example.com>", envelope_from=address.address,
        envelope_to=["zoe@partner.example.net"], subject=PHI_SUBJECT,
        raw=f"Subject: {PHI_SUBJECT}\r\n\r\n{PHI_BODY}\r\n".encode(),
    )
    deferred = Delivery.objects.create(
        message=sent, recipient="zoe@partner.example.net", state=Delivery.State.DEFERRED,
        detail="451 4.3.0 try later", attempts=2,
    )
    DeliveryEvent.objects.create(delivery=deferred, state=Delivery.State.QUEUED)
    DeliveryEvent.objects.create(delivery=deferred, state=Delivery.State.DEFERRED,
                                 detail="451 4.3.0 try later")
    received = Message.objects.create(
        direction=Message.Direction.INBOUND, state=Message.State.DELIVERED,
        message_id="<r1@partner.example.net>", envelope_from="zoe@partner.example.net",
        envelope_to=[address.address], subject=PHI_SUBJECT,
        raw=f"Subject: {PHI_SUBJECT}\r\n\r\n{PHI_BODY}\r\n".encode(),
    )
    Delivery.objects.create(message=received, recipient=address.address,
                            state=Delivery.State.DELIVERED)
    return {"sent": sent, "deferred": deferred, "received": received}


def test_queues_filters_details_and_a_delivery_failed_by_hand(traffic, console):
    page = console.page
    # From the dashboard's count of deferred deliveries to the filtered list.
    deferred_tile = page.locator(".tile", has_text="Deliveries needing attention")
    assert deferred_tile.get_by_role("row", name=re.compile("Deferred")).inner_text().endswith("1")
    deferred_tile.get_by_role("link", name="Deferred").click()
    page.get_by_role("heading", name="Deliveries").wait_for()
    rows = page.locator("table.list tbody tr").all_inner_texts()
    assert len(rows) == 1 and "zoe@partner.example.net" in rows[0]

    # Messages: by direction, by state, by Message-ID.
    nav(page, "Messages")
    assert page.locator("table.list tbody tr").count() == 2
    page.get_by_label("Direction").select_option(label="Inbound")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()
    rows = page.locator("table.list tbody tr").all_inner_texts()
    assert len(rows) == 1 and "<r1@partner.example.net>" in rows[0]
    page.get_by_label("Direction").select_option(label="Both directions")
    page.get_by_label("Message-ID or address").fill("m1@clinic")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()
    rows = page.locator("table.list tbody tr").all_inner_texts()
    assert len(rows) == 1 and "<m1@clinic.example.com>" in rows[0]
    # An address finds the mail it sent and the mail sent to it ("did my message arrive?").
    page.get_by_label("Message-ID or address").fill("alice@clinic")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()
    rows = " ".join(page.locator("table.list tbody tr").all_inner_texts())
    assert "<m1@clinic.example.com>" in rows and "<r1@partner.example.net>" in rows
    page.get_by_label("Message-ID or address").fill("nothing-like-this")
    page.get_by_role("button", name="Filter").click()
    page.get_by_text("No messages match.").wait_for()

    page.get_by_label("Message-ID or address").fill("m1@clinic")
    page.get_by_role("button", name="Filter").click()
    page.locator("table.list tbody tr").first.get_by_role("link").first.click()
    page.get_by_role("heading", name=f"Outbound message {traffic['sent'].pk}").wait_for()
    # Metadata only: never the subject or the body.
    content = page.content()
    assert PHI_SUBJECT not in content and PHI_BODY not in content
    assert "zoe@partner.example.net" in content

    page.get_by_role("link", name="zoe@partner.example.net").click()
    page.get_by_role("heading", name="Delivery to zoe@partner.example.net").wait_for()
    timeline = page.locator("ol.timeline li").all_inner_texts()
    assert len(timeline) == 2 and "451 4.3.0 try later" in timeline[1]

    # Failing it by hand: confirmation page, reason and tick.
    page.get_by_role("link", name="Fail now…").click()
    page.wait_for_load_state()
    assert PHI_SUBJECT not in page.content()
    page.locator("form.stacked button[type=submit]").click()
    refused_unticked(page)
    delivery = traffic["deferred"]
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.DEFERRED
    page.get_by_label("Reason").fill("Partner confirmed the mailbox is closed")
    page.get_by_role("checkbox").check()
    page.locator("form.stacked button[type=submit]").click()
    page.get_by_text("Delivery failed; the sender gets a failure notice.").wait_for()
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.FAILED

    # The deliveries list by state and recipient.
    nav(page, "Deliveries")
    page.get_by_label("State").select_option(label="Failed")
    page.get_by_label("Recipient").fill("zoe@")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()
    rows = page.locator("table.list tbody tr").all_inner_texts()
    assert len(rows) == 1 and "Failed" in rows[0]
    assert PHI_SUBJECT not in page.content()

    # Who looked, who searched, who failed what: all in the log, found with its filters.
    rows = audit_rows(page, Action="message.console-")
    text = " ".join(rows)
    assert "message.console-view" in text and "message.console-search" in text
    rows = audit_rows(page, Action="delivery.", Actor="sam")
    text = " ".join(rows)
    assert "delivery.console-view" in text and "Partner confirmed the mailbox is closed" in text
    # An impossible date range is refused with a message, not a 500.
    nav(page, "Audit log")
    page.get_by_label("Since").fill("2026-02-02")
    page.get_by_label("Until").fill("2026-01-01")
    page.get_by_role("button", name="Filter").click()
    page.get_by_text("The start date is after the end date.").wait_for()
    console.clean()


@pytest.fixture
def outsider(page: object) -> tuple[object, TOTPDevice]:
    """charlie owns a webmail mailbox at another domain and has his second factor: a fully
    signed-in user who is simply not staff."""
    cache.clear()
    user = get_user_model().objects.create_user("charlie", password=PASSWORD)
    domain = identity.add_domain("other.example.net")
    mailbox = Address.objects.create(address="charlie@other.example.net", domain=domain,
                                     display_name="Charlie", status=Address.Status.ACTIVE)
    AddressGrant.objects.create(user=user, address=mailbox, role=AddressGrant.Role.OWNER)
    return user, TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def test_a_webmail_user_opening_console_urls_sees_nothing(page, outsider):
    domain = Domain.objects.create(name="direct.example.org")
    ca = pkitools.store(pkitools.make_ca("Example Direct CA"), source=Certificate.Source.HOSTED,
                        domain=domain)
    Domain.objects.filter(pk=domain.pk).update(issuing_ca=ca)
    domain.refresh_from_db()
    alice = Address.objects.create(address="alice@direct.example.org", domain=domain,
                                   display_name="Dr Alice Example")
    bob = get_user_model().objects.create_user("bob")
    world = build(domain, alice, bob)

    sign_in(page, reverse("webmail:login"), "charlie", outsider[1])
    page.wait_for_url(re.compile(r"/mail/"))
    secrets = ("alice@direct.example.org", "Dr Alice Example", "zoe@partner.example.net",
               "Partner HISP CA", "<m1@direct.example.org>", "Community bundle",
               "451 4.3.0", PHI_SUBJECT, PHI_BODY, "mx.partner.example.net")
    for name in GET_VIEWS:
        url = reverse(f"adminconsole:{name}", kwargs=VIEWS[name][1](world))
        response = page.goto(url)
        assert response.status == 404, (name, response.status)
        content = page.content()
        # Not even that a console is there.
        assert "admin console" not in content.lower(), name
        for secret in secrets:
            assert secret not in content, (name, secret)
    # A POST crafted with charlie's own CSRF token passes the CSRF check (a 403 otherwise) and
    # gets no further.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    for name, (method, kwargs) in VIEWS.items():
        if method != "POST":
            continue
        url = reverse(f"adminconsole:{name}", kwargs=kwargs(world))
        response = page.request.post(url, headers={"X-CSRFToken": token, "Referer": page.url},
                                     form={"confirm": "on", "reason": "x", "domain": "evil.example"})
        assert response.status == 404, (name, response.status)
    assert not Domain.objects.filter(name="evil.example").exists()
    assert not AuditEvent.objects.filter(actor_label="charlie", action__contains="console").exists()
    assert page.csp_problems == []


def test_certificate_downloads_are_audited_and_the_domain_certificate_revocation_says_who_is_cut_off(
    traffic, console, tmp_path
):
    page = console.page
    domain_certificate = Certificate.objects.get(bound_name="clinic.example.com",
                                                 binding=Certificate.Binding.DOMAIN)
    nav(page, "Certificates")
    page.get_by_label("Bound to").fill("clinic.example.com")
    page.get_by_label("Binding").select_option(label="Domain-bound")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name="clinic.example.com").click()
    page.get_by_role("heading", name="Domain-bound certificate for clinic.example.com").wait_for()

    with page.expect_download() as pem:
        page.get_by_role("link", name="Download certificate (PEM)").click()
    saved = tmp_path / "domain.pem"
    pem.value.save_as(saved)
    assert saved.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" not in saved.read_bytes()

    # The key leaves only under a passphrase typed twice.
    page.get_by_role("link", name="Export with key (PKCS#12)…").click()
    page.get_by_label(re.compile(r"^Passphrase:?$")).fill("river stone 2026")
    page.get_by_label("Passphrase again").fill("river stone 2027")
    page.get_by_role("button").filter(has_text=re.compile("export|download", re.I)).click()
    page.get_by_text("The two passphrases differ.").wait_for()
    console.errors.clear()
    page.get_by_label(re.compile(r"^Passphrase:?$")).fill("river stone 2026")
    page.get_by_label("Passphrase again").fill("river stone 2026")
    with page.expect_download() as p12:
        page.get_by_role("button").filter(has_text=re.compile("export|download", re.I)).click()
    from cryptography.hazmat.primitives.serialization import pkcs12
    bundle = pkcs12.load_pkcs12(Path(p12.value.path()).read_bytes(), b"river stone 2026")
    assert bundle.key is not None

    # Revoking the domain's only certificate: the page says which addresses are cut off.
    page.goto(f"/console/certificates/{domain_certificate.pk}/revoke/")
    effects = page.locator("ul.effects").inner_text()
    # alice has no certificate of her own; postmaster has one.
    assert "clinic.example.com is left with no domain certificate: 1 address of it" in effects

    rows = audit_rows(page, Action="certificate.export")
    actions = " ".join(rows)
    assert "certificate.export_pem" in actions and "certificate.export_pkcs12" in actions
    assert "river stone" not in page.content()
    console.clean()


def test_signing_out_leaves_no_console_page_behind(traffic, console):
    page = console.page
    page.goto(f"/console/queues/messages/{traffic['sent'].pk}/")
    page.get_by_role("heading", name=f"Outbound message {traffic['sent'].pk}").wait_for()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    page.go_back()
    page.wait_for_load_state()
    assert "m1@clinic.example.com" not in page.content()
    page.goto(f"/console/queues/messages/{traffic['sent'].pk}/")
    assert "m1@clinic.example.com" not in page.content()
    page.get_by_label("Username").wait_for()


def test_new_address_owner_password_shown_once_and_suspension_confirmed(hosted, console):
    page = console.page
    nav(page, "Addresses")
    # Typing mistakes come back beside the field, with what was typed kept.
    page.get_by_label("Direct address").fill("dr.no@elsewhere.example.org")
    page.get_by_label("Display name").fill("Dr No")
    page.get_by_role("button", name="Add address").click()
    page.get_by_text("The domain of this address is not hosted here.").wait_for()
    assert page.get_by_label("Display name").input_value() == "Dr No"
    console.errors.clear()

    page.get_by_label("Direct address").fill("dr.no@clinic.example.com")
    page.get_by_role("button", name="Add address").click()
    page.get_by_role("heading", name="dr.no@clinic.example.com added, pending proofing").wait_for()
    temporary = page.locator(".secret code").inner_text()
    assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", temporary)
    address = Address.objects.get(address="dr.no@clinic.example.com")
    assert address.status == Address.Status.PENDING
    page.get_by_role("link", name="Back to the address").first.click()
    page.get_by_role("heading", name="dr.no@clinic.example.com").wait_for()
    assert temporary not in page.content()

    # Mailbox access for a username that does not exist: said plainly, nothing granted.
    page.get_by_label("Username").fill("nobody-here")
    page.get_by_role("button", name="Grant access").click()
    page.get_by_text("No active user with this username.").wait_for()
    console.errors.clear()

    # Proof, activate, then suspend through its confirmation page.
    page.get_by_label("Proofed by").fill("HR onboarding")
    page.get_by_label("Evidence reference").fill("HR-5521")
    page.get_by_label("Date proofed").fill(date.today().isoformat())
    page.get_by_role("button", name="Record proofing").click()
    page.get_by_role("button", name="Activate").click()
    page.get_by_text("dr.no@clinic.example.com is now active.").wait_for()
    page.get_by_role("link", name="Suspend…").click()
    page.wait_for_load_state()
    assert "dr.no@clinic.example.com" in page.get_by_role("heading", level=1).inner_text()
    page.get_by_label("Reason").fill("On leave until March")
    page.get_by_role("checkbox").check()
    page.locator("form.stacked button[type=submit]").click()
    page.get_by_text("dr.no@clinic.example.com is now suspended.").wait_for()
    address.refresh_from_db()
    assert address.status == Address.Status.SUSPENDED

    rows = audit_rows(page, Action="address.")
    text = " ".join(rows)
    assert "address.suspend" in text and "On leave until March" in text
    assert temporary not in page.content()
    assert not AuditEvent.objects.filter(detail__icontains=temporary).exists()
    console.clean()


def test_a_bundle_file_is_uploaded_and_its_anchors_follow_the_bundle(hosted, console, tmp_path):
    from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

    from hisp.models import TrustBundle

    page = console.page
    members = [pkitools.make_ca("Community Member One CA"), pkitools.make_ca("Community Member Two CA")]
    bundle_file = tmp_path / "community.p7b"
    bundle_file.write_bytes(pkcs7.serialize_certificates([m.certificate for m in members],
                                                         Encoding.DER))
    nav(page, "Bundles")
    # Neither a URL nor a file: said plainly.
    page.get_by_label("Name").fill("Regional community")
    page.get_by_role("button", name="Add bundle").click()
    page.get_by_role("alert").get_by_text("Give either a bundle URL or a bundle file.").wait_for()
    # Said once: the page used to print a form's own errors twice.
    assert page.get_by_text("Give either a bundle URL or a bundle file.").count() == 1
    console.errors.clear()
    page.get_by_label("or a bundle file (.p7b / .p7c / .p7m)").set_input_files(str(bundle_file))
    page.get_by_role("button", name="Add bundle").click()
    # First its anchors, each with the fingerprint to check, and nothing trusted yet.
    page.get_by_role("heading", name="Add the bundle Regional community for clinic.example.com"
                     ).wait_for()
    assert "uploaded file community.p7b" in page.locator("dl.facts").inner_text()
    table = page.locator("table.bundle-anchors tbody").inner_text()
    for member in members:
        assert member.certificate.subject.rfc4514_string() in table
        assert ":".join(re.findall("..", member.fingerprint.upper())) in table
    assert not TrustBundle.objects.exists()
    page.get_by_role("button", name="Add the bundle").click()
    refused_unticked(page)
    assert not TrustBundle.objects.exists()
    page.get_by_label("I have checked these 2 anchors and trust them for clinic.example.com "
                      "(incoming and outgoing mail).").check()
    page.get_by_role("button", name="Add the bundle").click()
    page.get_by_role("heading", name="Trust bundle Regional community").wait_for()
    assert page.get_by_text("Bundle added with 2 anchor(s).").is_visible()
    listed = page.locator("h2:has-text('Anchors from this bundle') + ul").inner_text()
    assert "Community Member One CA" in listed and "Community Member Two CA" in listed

    # Anchors that come from a bundle are not removed one by one.
    nav(page, "Anchors")
    row = page.locator("table.list tbody tr", has_text="Community Member One CA")
    assert "Regional community" in row.inner_text()
    assert row.get_by_role("link", name="Stop trusting…").count() == 0

    # Refreshing the same file: the preview says nothing changes, and nothing is asked.
    nav(page, "Bundles")
    page.get_by_role("link", name="Refresh now…").click()
    page.wait_for_load_state()
    page.get_by_role("status").get_by_text("Refreshing changes nothing").wait_for()
    assert page.get_by_role("checkbox").count() == 0
    rows = audit_rows(page, Action="bundle.")
    assert "bundle.add" in " ".join(rows)
    console.clean()


def test_audit_log_pages_keep_their_filters(console, hosted):
    from hisp.services import audit

    page = console.page
    for n in range(60):
        audit.record(action="route.set", obj=("route", f"r{n}"), actor=None, destination=f"d{n}")
    audit.record(action="certificate.issue", obj=("certificate", "x"), actor=None)
    nav(page, "Audit log")
    page.get_by_label("Action", exact=True).fill("route.")
    page.get_by_role("button", name="Filter").click()
    page.get_by_text("Page 1 of 2 (60 in all)").wait_for()
    page.get_by_role("link", name="Next").click()
    page.get_by_text("Page 2 of 2 (60 in all)").wait_for()
    assert page.get_by_label("Action", exact=True).input_value() == "route."
    rows = page.locator("table.list tbody tr").all_inner_texts()
    assert len(rows) == 10 and all("route.set" in row for row in rows)
    # Each page looked at is itself in the log, with the filter used.
    views = AuditEvent.objects.filter(action="audit.view").order_by("id")
    assert [(v.detail.get("filters"), v.detail.get("page")) for v in views][-2:] == [
        ({"action": "route."}, 1), ({"action": "route."}, 2)]
    console.clean()


def test_a_route_is_set_replaced_with_a_reason_and_deleted(console):
    page = console.page
    nav(page, "Routes")
    page.get_by_label("Destination domain").fill("partner.example.net")
    page.get_by_label("Host").fill("mx1.partner.example.net")
    page.get_by_label("Port").fill("2525")
    page.get_by_label("Require STARTTLS").check()
    page.get_by_role("button", name="Save route").click()
    page.wait_for_load_state()
    row = page.locator("table.list tbody tr", has_text="partner.example.net")
    assert "mx1.partner.example.net" in row.inner_text() and "2525" in row.inner_text()

    # The same domain again replaces its route: a page says what changes, and asks why.
    page.get_by_label("Destination domain").fill("partner.example.net")
    page.get_by_label("Host").fill("mx2.partner.example.net")
    page.get_by_label("Port").fill("25")
    page.get_by_role("button", name="Save route").click()
    page.wait_for_load_state()
    facts = page.locator("dl.facts").inner_text()
    assert "mx1.partner.example.net" in facts and "mx2.partner.example.net" in facts
    page.get_by_label("Reason").fill("Partner moved its gateway (ticket 881)")
    page.get_by_role("checkbox").check()
    page.locator("form.stacked button[type=submit]").click()
    page.get_by_role("heading", name="Routes").wait_for()
    row = page.locator("table.list tbody tr", has_text="partner.example.net")
    assert "mx2.partner.example.net" in row.inner_text()
    assert "mx1.partner.example.net" not in page.locator("table.list").inner_text()

    row.get_by_role("link", name="Delete…").click()
    page.wait_for_load_state()
    page.get_by_label("Reason").fill("Partner left the network")
    page.get_by_role("checkbox").check()
    page.locator("form.stacked button[type=submit]").click()
    page.get_by_role("heading", name="Routes").wait_for()
    assert page.locator("table.list tbody tr", has_text="partner.example.net").count() == 0

    text = " ".join(audit_rows(page, Action="route."))
    assert "Partner moved its gateway (ticket 881)" in text and "Partner left the network" in text
    console.clean()
