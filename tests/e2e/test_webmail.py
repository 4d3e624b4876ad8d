from __future__ import annotations

from pathlib import Path

import pytest

from hisp.models import MailboxEntry, Message
from tests.factories import MailboxEntryFactory, MessageFactory
from tests.webmail.certs import certificate_row
from tests.webmail.otp import current_code
from tests.webmail.personas import PASSWORD, Persona, make_persona

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
CCD = (Path(__file__).parent.parent / "webmail" / "data" / "ccd.xml").read_bytes()


def sign_in(page, persona: Persona) -> None:
    page.goto("/mail/")
    page.get_by_label("Username").fill(persona.user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("6-digit code").fill(current_code(persona.device))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Inbox").wait_for()


def test_a_clinician_signs_in_with_totp_reads_a_message_and_its_ccda(page):
    alice = make_persona("alice", "clinic.example")
    anchor = certificate_row(cn="Partner Root CA", org="Partner Trust Services",
                             binding="ca", bound_name="partner.example")
    message = MessageFactory(subject="Discharge summary", signer_organisation="Partner Clinic",
                             anchor=anchor,
                             text="Summary attached.", attachments=[("ccd.xml", "text/xml", CCD)])
    MailboxEntryFactory(address=alice.address, message=message, subject="Discharge summary",
                        has_attachments=True)
    sign_in(page, alice)
    page.get_by_role("link", name="Discharge summary").click()
    banner = page.locator("#trust-banner")
    assert "Verified secure message" in banner.inner_text()
    assert "Partner Clinic" in banner.inner_text()
    assert "Summary attached." in page.locator("#message-body").inner_text()
    page.get_by_role("link", name="View clinical document").click()
    assert page.locator("#cda-patient").inner_text() == "Isabella Isa Jones"
    assert "Community Health and Hospitals" in page.locator("#cda-author").inner_text()
    assert page.get_by_role("heading", name="Allergies and Intolerances").is_visible()
    assert page.csp_problems == []


def test_an_outsider_gets_404_for_another_users_message(page):
    alice = make_persona("alice", "clinic.example")
    charlie = make_persona("charlie", "elsewhere.example")
    entry = MailboxEntryFactory(address=alice.address)
    sign_in(page, charlie)
    MailboxEntryFactory.create_batch(2, address=charlie.address)
    page.reload()
    page.get_by_label("Select all messages on this page").check()
    assert page.locator("input[name=entry]:checked").count() == 2
    response = page.goto(f"/mail/m/{entry.pk}/")
    assert response.status == 404
    response = page.goto(f"/mail/a/{alice.address.pk}/inbox/")
    assert response.status == 404


def test_a_clinician_composes_with_an_attachment_and_it_is_queued(page, tmp_path):
    alice = make_persona("alice", "clinic.example")
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.7 e2e")
    sign_in(page, alice)
    page.get_by_role("link", name="Write a message").click()
    page.get_by_label("To", exact=True).fill("dana@partner.example")
    page.get_by_label("Subject").fill("Consult request")
    page.get_by_label("Body").fill("Please review the attached report.")
    page.get_by_label("Attachments").set_input_files(str(report))
    assert page.get_by_label("Request delivery confirmation").is_checked()
    # The per-recipient certificate check answers as soon as the recipient is entered.
    page.get_by_label("To", exact=True).press("Tab")
    page.locator("#certificate-check li[data-recipient='dana@partner.example']").wait_for()
    page.get_by_role("button", name="Send securely").click()
    page.get_by_role("heading", name="Delivery").wait_for()
    message = Message.objects.get(direction=Message.Direction.OUTBOUND)
    assert message.state == Message.State.QUEUED
    assert message.envelope_to == ["dana@partner.example"]
    assert b"report.pdf" in bytes(message.raw)
    assert MailboxEntry.objects.filter(message=message, folder="sent").exists()
    assert page.csp_problems == []


def test_a_first_sign_in_enrols_an_authenticator_from_the_qr_page(page):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    dora = make_persona("dora", "clinic.example")
    dora.device.delete()
    page.goto("/mail/")
    page.get_by_label("Username").fill("dora")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="Set up your authenticator app").wait_for()
    assert page.locator(".qr svg").count() == 1
    secret = page.locator("#totp-secret").inner_text()
    device = TOTPDevice.objects.get(user=dora.user, confirmed=False)
    assert secret.strip()
    page.get_by_label("6-digit code").fill(current_code(device))
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("heading", name="Inbox").wait_for()
    assert TOTPDevice.objects.get(pk=device.pk).confirmed
    assert page.csp_problems == []


def test_compose_suggests_recipients_and_autosaves_a_draft(page):
    from webmail.models import Contact, Draft

    alice = make_persona("alice", "clinic.example")
    Contact.objects.create(owner=alice.user, address="dana@partner.example", name="Dana Scully")
    sign_in(page, alice)
    page.get_by_role("link", name="Write a message").click()
    page.get_by_label("To", exact=True).press_sequentially("dan", delay=50)
    page.locator("#suggest-to option[value='dana@partner.example']").wait_for(state="attached")
    page.get_by_label("Subject").fill("Jones, Isabella follow-up")
    page.locator("#phi-warning .notice").wait_for()
    page.get_by_label("Body").press_sequentially("Draft text", delay=20)
    page.locator("#draft-status", has_text="Draft saved").wait_for()
    draft = Draft.objects.get(author=alice.user)
    assert draft.body == "Draft text"
    assert page.locator("#id_draft").input_value() == str(draft.pk)
    assert page.csp_problems == []
