"""Accessibility of the webmail in headless Chromium: axe-core's WCAG 2.1 A and AA rules on every
page a clinician or a patient meets (sign-in, the code step, the inbox, a message, a C-CDA
document, compose with an error, drafts, sent, search, folders, settings, sharing, the Trash
confirmation, an invitation, 404 and 403), and the keyboard path through the main flow.

Some clinicians and patients use screen readers, only a keyboard, or large text; axe finds what a
machine can (names, labels, contrast, landmarks, ids, ARIA), the keyboard tests what it cannot
(where Tab goes, whether focus shows, whether the navigation can be skipped)."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.utils import timezone

from hisp.models import (
    AddressGrant,
    Delivery,
    DeliveryEvent,
    Folder,
    Invitation,
    MailboxEntry,
    Message,
)
from tests.e2e.test_webmail import sign_in
from tests.e2e.test_webmail_flows import patient, received
from tests.factories import AddressGrantFactory, MailboxEntryFactory, MessageFactory
from tests.webmail.certs import certificate_row
from tests.webmail.otp import current_code
from tests.webmail.personas import PASSWORD, Persona, make_persona
from webmail.models import Contact, Draft, WebAuthnDevice

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
CCD = (Path(__file__).parent.parent / "webmail" / "data" / "ccd.xml").read_bytes()
Box = MailboxEntry.SystemFolder
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


class Audit:
    """Runs axe on each page visited and keeps every violation, so one run reports them all."""

    def __init__(self, page) -> None:
        from axe_playwright_python.sync_playwright import Axe

        self.page = page
        self.axe = Axe()
        self.found: list[str] = []
        self.visited: list[str] = []

    def check(self, name: str, *, best_practice: bool = True) -> None:
        """``best_practice``: also axe's advisory rules (landmarks, heading order, empty table
        headers), which the webmail's own pages meet."""
        page = self.page
        page.wait_for_load_state("networkidle")
        # The page's own CSP problems, before axe is injected (Playwright's evaluate is exempt).
        assert page.csp_problems == [], f"{name}: {page.csp_problems}"
        tags = WCAG_21_AA + ["best-practice"] if best_practice else WCAG_21_AA
        results = self.axe.run(page, options={"runOnly": {"type": "tag", "values": tags},
                                              "resultTypes": ["violations"]})
        self.visited.append(name)
        for violation in results.response["violations"]:
            targets = [", ".join(map(str, node["target"])) for node in violation["nodes"]]
            summary = [node.get("failureSummary", "").replace("\n", " ")
                       for node in violation["nodes"]][:1]
            self.found.append(f"{name} [{page.url}]: {violation['id']} ({violation['impact']}) "
                              f"{violation['help']}; nodes: {targets}; {summary}")

    def assert_clean(self) -> None:
        assert self.visited, "no page was audited"
        assert self.found == [], "axe violations:\n" + "\n".join(self.found)


@pytest.fixture
def audit(page):
    cache.clear()  # sign-in failure counts live in the cache and outlive each test's database
    return Audit(page)


def verified_message(alice: Persona, **fields: object) -> MailboxEntry:
    anchor = certificate_row(cn="Partner Root CA", org="Partner Trust Services",
                             binding="ca", bound_name="partner.example")
    message = MessageFactory(subject="Discharge summary", signer_organisation="Partner Clinic",
                             anchor=anchor,
                             text="Summary attached.",
                             attachments=[("ccd.xml", "text/xml", CCD)])
    return MailboxEntryFactory(address=alice.address, message=message, subject="Discharge summary",
                               has_attachments=True, **fields)


def test_sign_in_and_code_step_pages_pass_axe(page, audit):
    alice = make_persona("alice", "clinic.example")
    page.goto("/mail/")
    page.get_by_label("Username").wait_for()
    audit.check("sign-in")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("alert").wait_for()
    audit.check("sign-in with an error")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("6-digit code").wait_for()
    audit.check("code step")
    page.get_by_label("6-digit code").fill("000000" if current_code(alice.device) != "000000"
                                            else "111111")
    page.get_by_role("button", name="Sign in").click()
    page.locator(".errorlist").wait_for()
    audit.check("code step with a wrong code")
    page.get_by_role("button", name="Use another account").click()

    # A first sign-in: the authenticator enrolment page with its QR code.
    dora = make_persona("dora", "clinic.example")
    dora.device.delete()
    page.get_by_label("Username").fill("dora")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="Set up your authenticator app").wait_for()
    audit.check("authenticator enrolment")
    audit.assert_clean()


def test_no_mailbox_and_locked_sign_in_pages_pass_axe(page, audit, settings):
    erin = make_persona("erin", "clinic.example")
    erin.address.grants.all().delete()
    sign_in_to = "/mail/"
    page.goto(sign_in_to)
    page.get_by_label("Username").fill("erin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("6-digit code").fill(current_code(erin.device))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="No mailbox yet").wait_for()
    audit.check("no mailbox")
    page.get_by_role("button", name="Sign out").click()

    make_persona("frank", "clinic.example")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        page.goto(sign_in_to)
        page.get_by_label("Username").fill("frank")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="Sign-in paused").wait_for()
    audit.check("sign-in paused")
    audit.assert_clean()


def test_the_code_step_offering_a_security_key_passes_axe(page, audit):
    alice = make_persona("alice", "clinic.example")
    WebAuthnDevice.objects.create(user=alice.user, name="YubiKey", credential_id="a11y-key",
                                  public_key=b"\xa5", confirmed=True)
    page.goto("/mail/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="Use your security key").wait_for()
    audit.check("code step with a security key")
    audit.assert_clean()


def test_mailbox_message_and_document_pages_pass_axe(page, audit):
    alice = make_persona("alice", "clinic.example")
    bob = make_persona("bob", "clinic.example")
    # A shared practice mailbox, so the Mailboxes navigation shows too.
    AddressGrantFactory(user=alice.user, address=bob.address, role=AddressGrant.Role.READ_SEND)
    discharge = verified_message(alice)
    unverified = received(alice, signer="", subject="Unsigned note",
                          attachments=(("ecg.pdf", "application/pdf", b"%PDF-1.7"),))
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("IHE_XDM/SUBSET01/METADATA.XML", b"<metadata/>")
        archive.writestr("IHE_XDM/SUBSET01/DOC0001.XML", CCD)
        archive.writestr("IHE_XDM/SUBSET01/scan.pdf", b"%PDF-1.7")
    xdm = received(alice, subject="XDM package",
                   attachments=(("package.zip", "application/zip", package.getvalue()),))
    flagged = received(alice, subject="Flagged referral")
    MailboxEntry.objects.filter(pk=flagged.pk).update(flagged=True, read=True)
    MailboxEntryFactory.create_batch(2, address=alice.address, read=True)

    sign_in(page, alice)
    audit.check("inbox with unread, flagged and attachment rows")

    page.get_by_role("link", name="Discharge summary").click()
    page.locator("#trust-banner").wait_for()
    audit.check("verified message with an attachment")
    page.get_by_role("link", name="View clinical document").click()
    page.locator("#cda-patient").wait_for()
    audit.check("C-CDA document")

    page.goto(f"/mail/m/{xdm.pk}/")
    page.get_by_role("link", name="Open XDM package").click()
    page.get_by_role("heading", name="Documents in package.zip").wait_for()
    audit.check("XDM package")
    page.get_by_role("link", name="View document IHE_XDM/SUBSET01/DOC0001.XML").click()
    page.locator("#cda-patient").wait_for()
    audit.check("C-CDA document in an XDM package")

    page.goto(f"/mail/m/{unverified.pk}/")
    page.locator("#trust-banner").wait_for()
    audit.check("unverified message")
    page.goto(f"/mail/m/{flagged.pk}/")
    page.get_by_role("button", name="Remove flag").wait_for()
    audit.check("flagged message")
    page.goto(f"/mail/m/{discharge.pk}/")
    audit.assert_clean()


def test_compose_drafts_and_sent_with_delivery_states_pass_axe(page, audit):
    alice = make_persona("alice", "clinic.example")
    Contact.objects.create(owner=alice.user, address="dana@partner.example", name="Dana Scully")
    Draft.objects.create(author=alice.user, address=alice.address, to="dana@partner.example",
                         subject="Follow-up", body="Draft text")
    sign_in(page, alice)
    page.get_by_role("link", name="Write a message").click()
    page.get_by_role("heading", name="Write a message").wait_for()
    audit.check("compose")
    page.get_by_label("To", exact=True).fill("dr alice at the clinic")
    page.get_by_label("Subject", exact=True).fill("Jones, Isabella DOB 01/02/1960")
    page.get_by_role("button", name="Send securely").click()
    page.locator(".errorlist").first.wait_for()
    audit.check("compose with errors")

    page.get_by_label("To", exact=True).fill("a@partner.example, b@partner.example")
    page.get_by_label("To", exact=True).press("Tab")
    page.locator("#certificate-check li[data-recipient='b@partner.example']").wait_for()
    audit.check("compose with certificate checks")
    page.get_by_label("Subject", exact=True).fill("Lab results")
    if page.get_by_label("send anyway").count():
        page.get_by_label("send anyway").uncheck()
    page.get_by_label("Body").fill("Results attached.")
    page.get_by_role("button", name="Send securely").click()
    page.get_by_role("heading", name="Delivery").wait_for()
    message = Message.objects.filter(direction=Message.Direction.OUTBOUND).latest("id")
    now = timezone.now()
    deliveries = list(message.deliveries.order_by("recipient"))
    Delivery.objects.filter(pk=deliveries[0].pk).update(state=Delivery.State.DISPATCHED,
                                                        sent_at=now)
    DeliveryEvent.objects.create(delivery=deliveries[0], state=Delivery.State.DISPATCHED,
                                 detail="delivered")
    Delivery.objects.filter(pk=deliveries[1].pk).update(state=Delivery.State.FAILED)
    DeliveryEvent.objects.create(delivery=deliveries[1], state=Delivery.State.FAILED,
                                 detail="no certificate")
    page.reload()
    audit.check("sent message with delivery timeline")

    folders = page.get_by_role("navigation", name="Folders")
    folders.get_by_role("link", name="Sent").click()
    page.get_by_role("heading", name="Sent").wait_for()
    audit.check("sent folder with delivery states")
    folders.get_by_role("link", name="Drafts").click()
    page.get_by_role("heading", name="Drafts").wait_for()
    audit.check("drafts")
    audit.assert_clean()


def test_search_folders_trash_and_settings_pass_axe(page, audit):
    alice = make_persona("alice", "clinic.example")
    bob = make_persona("bob", "clinic.example")
    AddressGrantFactory(user=bob.user, address=alice.address, role=AddressGrant.Role.READ)
    received(alice)
    Folder.objects.create(address=alice.address, name="Cardiology")
    MailboxEntryFactory.create_batch(2, address=alice.address, folder=Box.TRASH,
                                     trashed_at=timezone.now())
    sign_in(page, alice)
    search = page.get_by_role("searchbox", name="Search this mailbox")
    search.fill("cardiology")
    search.press("Enter")
    page.get_by_role("heading", name="Search: cardiology").wait_for()
    audit.check("search results")
    search = page.get_by_role("searchbox", name="Search this mailbox")
    search.fill("zebrafish")
    search.press("Enter")
    page.get_by_role("status").wait_for()
    audit.check("search with no results")

    page.get_by_role("link", name="Manage folders…").click()
    page.get_by_role("heading", name=f"Folders of {alice.address.address}").wait_for()
    audit.check("folders")
    page.get_by_role("navigation", name="Folders").get_by_role("link", name="Cardiology").click()
    page.get_by_role("heading", name="Cardiology").wait_for()
    audit.check("empty user folder")
    page.get_by_role("navigation", name="Folders").get_by_role("link", name="Trash").click()
    page.get_by_role("heading", name="Trash").wait_for()
    audit.check("trash")
    page.get_by_role("link", name="Empty Trash").click()
    page.get_by_role("heading", name="Empty Trash?").wait_for()
    audit.check("empty trash confirmation")

    page.get_by_role("link", name="Settings").first.click()
    page.get_by_role("heading", name="Settings", exact=True).wait_for()
    audit.check("settings")
    WebAuthnDevice.objects.create(user=alice.user, name="YubiKey", credential_id="a11y-key",
                                  public_key=b"\xa5", confirmed=True)
    page.get_by_role("link", name="Add a security key").click()
    page.get_by_role("heading", name="Add a security key").wait_for()
    audit.check("add a security key")
    page.goto("/mail/account/")
    page.get_by_role("link", name="Remove YubiKey").click()
    page.get_by_label("Your password").fill("wrong password")
    page.get_by_role("button", name="Remove security key").click()
    page.locator(".errorlist").wait_for()
    audit.check("remove a security key with an error")
    settings = page.get_by_role("navigation", name="Settings")
    settings.get_by_role("link", name="Contacts").click()
    page.get_by_label("Direct address").fill("dana@partner.example")
    page.get_by_role("button", name="Save contact").click()
    page.get_by_role("cell", name="dana@partner.example").wait_for()
    audit.check("contacts")
    settings.get_by_role("link", name="App passwords").click()
    page.get_by_label("Device or program name").fill("Thunderbird")
    page.get_by_role("button", name="Create app password").click()
    page.locator("#new-app-password").wait_for()
    audit.check("app passwords with a new password shown")
    settings.get_by_role("link", name="Change password").click()
    page.get_by_role("button", name="Change password").click()
    page.locator(".errorlist").first.wait_for()
    audit.check("change password with errors")
    page.goto(f"/mail/a/{alice.address.pk}/sharing/")
    page.get_by_role("heading", name=f"Who can use {alice.address.address}").wait_for()
    audit.check("sharing")
    audit.assert_clean()


def test_error_pages_pass_axe(page, audit):
    alice = make_persona("alice", "clinic.example")
    bob = make_persona("bob", "clinic.example")
    AddressGrantFactory(user=bob.user, address=alice.address, role=AddressGrant.Role.READ)
    sign_in(page, bob)
    response = page.goto("/mail/m/999999999/")
    # The site's own error pages (templates/404.html, 403.html): landmarks and all.
    assert response.status == 404
    audit.check("404")
    # A read-only delegate sees the mailbox but may not manage its sharing: 403.
    response = page.goto(f"/mail/a/{alice.address.pk}/sharing/")
    assert response.status == 403
    audit.check("403")
    audit.assert_clean()


def test_the_read_only_and_patient_views_pass_axe(page, audit):
    alice = make_persona("alice", "clinic.example")
    bob = make_persona("bob", "clinic.example")
    AddressGrantFactory(user=bob.user, address=alice.address, role=AddressGrant.Role.READ)
    entry = received(alice)
    sign_in(page, bob)
    page.goto(f"/mail/a/{alice.address.pk}/inbox/")
    page.get_by_role("heading", name="Inbox").wait_for()
    audit.check("read-only delegate's inbox")
    page.goto(f"/mail/m/{entry.pk}/")
    page.get_by_text("You have read-only access to this mailbox.").wait_for()
    audit.check("read-only delegate's message")
    audit.assert_clean()


def test_the_patient_invitation_pages_pass_axe(page, audit):
    jane = patient("jane.roe")
    jane.user.delete()
    token = Invitation.new_token()
    Invitation.objects.create(address=jane.address, token_hash=Invitation.hash_token(token),
                              email="jane@home.example.net",
                              expires_at=timezone.now() + timedelta(days=7))
    page.goto(f"/mail/invitation/{token}/")
    page.get_by_role("heading", name=f"Set up your secure mailbox for {jane.address.address}"
                     ).wait_for()
    audit.check("invitation")
    page.get_by_role("button", name="Set up my mailbox").click()
    page.locator(".errorlist").first.wait_for()
    audit.check("invitation with errors")
    page.goto(f"/mail/invitation/{'x' * 43}/")
    page.get_by_role("heading", name="This invitation link does not work").wait_for()
    audit.check("invitation that does not work")
    audit.assert_clean()


# --- Keyboard ------------------------------------------------------------------------------------
FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  const box = el.getBoundingClientRect();
  return {
    tag: el.tagName.toLowerCase(),
    text: (el.getAttribute('aria-label') || el.innerText || el.value || el.name || '').trim(),
    id: el.id,
    outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
    shadow: style.boxShadow !== 'none',
    visible: box.width > 0 && box.height > 0 && box.bottom > 0 && box.right > 0,
  };
}"""


def tab_through(page, limit: int = 80) -> list[dict]:
    """Every element Tab reaches from the top of the page, in order, once round."""
    page.locator("body").focus()
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    seen: list[dict] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused is None or (seen and focused == seen[0]):
            break
        seen.append(focused)
    return seen


def unmarked(stops: list[dict]) -> list[dict]:
    return [stop for stop in stops if not (stop["outline"] or stop["shadow"]) or not stop["visible"]]


def test_a_keyboard_user_skips_the_navigation_and_reaches_the_main_controls(page):
    alice = make_persona("alice", "clinic.example")
    entry = received(alice)
    sign_in(page, alice)

    stops = tab_through(page)
    # The first Tab lands on the skip link, which shows itself and moves focus into <main>.
    assert stops[0]["text"] == "Skip to content" and stops[0]["visible"]
    assert unmarked(stops) == []
    names = [stop["text"] for stop in stops]
    for control in ("Write a message", "Inbox", "Search", "Select all messages on this page",
                    "Select message Referral: cardiology"):
        assert any(control in name for name in names), (control, names)
    assert any(stop["tag"] == "input" and stop["id"] == "q" for stop in stops), names
    assert any("Referral: cardiology" in name and stop["tag"] == "a"
               for name, stop in zip(names, stops, strict=True)), names

    page.locator("body").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # <main> holds the folder list too; the next stop offers to skip it, and shows itself.
    page.keyboard.press("Tab")
    focused = page.evaluate(FOCUSED)
    assert focused["text"] == "Skip the folder list" and focused["visible"], focused
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "q"
    assert page.locator("main").count() == 1
    assert page.get_by_role("navigation", name="Folders").count() == 1

    # Open the message and act on it with the keyboard alone.
    page.goto(f"/mail/a/{alice.address.pk}/inbox/")
    link = page.get_by_role("link", name="Referral: cardiology")
    link.focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Referral: cardiology").wait_for()
    stops = tab_through(page)
    assert unmarked(stops) == []
    names = [stop["text"] for stop in stops]
    for control in ("Reply", "Reply all", "Forward", "Delete", "Flag", "Move"):
        assert control in names, (control, names)
    assert "move-target" in [stop["id"] for stop in stops], names

    # Compose: every field is reachable in reading order and marked when focused.
    page.get_by_role("link", name="Reply", exact=True).focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Write a message").wait_for()
    stops = tab_through(page)
    assert unmarked(stops) == []
    ids = [stop["id"] for stop in stops]
    order = ["id_sender", "id_to", "id_cc", "id_subject", "id_body", "id_attachments",
             "id_delivery_notification"]
    assert [i for i in ids if i in order] == order, ids
    assert "Send securely" in [stop["text"] for stop in stops]
    entry.refresh_from_db()
    assert entry.read
    assert page.csp_problems == []



# --- Zoom ----------------------------------------------------------------------------------------
# WCAG 1.4.10 Reflow: 320 CSS pixels wide is a 1280-pixel screen at 400% zoom.
ZOOMED = {"width": 320, "height": 640}
OVERFLOWING = """(width) => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > width + 1)
  .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
            (e.className && typeof e.className === 'string' ? '.' + e.className : ''))
  .slice(0, 8)"""


def test_pages_reflow_at_400_percent_zoom_without_sideways_scrolling(page):
    alice = make_persona("alice", "clinic.example")
    bob = make_persona("bob", "clinic.example")
    entry = verified_message(alice)
    Draft.objects.create(author=alice.user, address=alice.address,
                         to="a.very.long.recipient.address@partner.example", subject="Follow-up")
    page.set_viewport_size(ZOOMED)
    wide: dict[str, list[str]] = {}

    def measure(name: str) -> None:
        page.wait_for_load_state("networkidle")
        if page.evaluate("document.documentElement.scrollWidth") > ZOOMED["width"]:
            wide[name] = page.evaluate(OVERFLOWING, ZOOMED["width"])

    page.goto("/mail/")
    measure("sign-in")
    sign_in(page, alice)
    AddressGrantFactory(user=bob.user, address=alice.address, role=AddressGrant.Role.READ)
    measure("inbox")
    for name, url in (
        ("message", f"/mail/m/{entry.pk}/"),
        ("C-CDA document", f"/mail/m/{entry.pk}/attachments/0/view/"),
        ("compose", "/mail/compose/"),
        ("drafts", f"/mail/a/{alice.address.pk}/drafts/"),
        ("folders", f"/mail/a/{alice.address.pk}/folders/"),
        ("settings", "/mail/account/"),
        ("contacts", "/mail/account/contacts/"),
        ("app passwords", "/mail/account/app-passwords/"),
        ("sharing", f"/mail/a/{alice.address.pk}/sharing/"),
    ):
        page.goto(url)
        measure(name)
    assert wide == {}
