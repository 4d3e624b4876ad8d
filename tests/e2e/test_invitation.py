"""End to end in headless Chromium: staff invite a proofed patient from the console, the
invitation goes out through a real SMTP server on loopback, and the patient follows the link in
the received email, chooses a password, enrols an authenticator and reaches the inbox."""

from __future__ import annotations

import email
import re
from datetime import date
from email import policy

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django_otp.plugins.otp_totp.models import TOTPDevice

from adminconsole.models import ProofingRecord
from adminconsole.roles import Role, role_groups
from hisp.models import Address, AuditEvent, Domain, Invitation
from tests.factories import AddressFactory, DomainFactory, MailboxEntryFactory
from tests.hisp.mail.partner import Sink
from tests.webmail.otp import current_code
from tests.webmail.personas import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
PATIENT = "jane.roe@portal.example"
CHOSEN = "plum tree orchard 42"


@pytest.fixture
def smtp_sink(settings):
    with Sink() as sink:
        # pytest-django swaps in the locmem backend for tests; point at the real server.
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.controller.port
        yield sink


def test_a_patient_is_invited_by_email_sets_up_the_mailbox_and_reads_the_inbox(
    browser, live_server, settings, smtp_sink
):
    settings.HISP_WEB_URL = live_server.url
    cache.clear()  # failure counts per client IP outlive other tests' databases
    portal = DomainFactory(name="portal.example", kind=Domain.Kind.PATIENT_PORTAL)
    patient = AddressFactory(address=PATIENT, domain=portal, kind=Address.Kind.PATIENT,
                             status=Address.Status.ACTIVE, display_name="Jane Roe")
    ProofingRecord.objects.create(address=patient, proofed_by="Front desk",
                                  method=ProofingRecord.Method.IN_PERSON_GOVERNMENT_ID,
                                  evidence_reference="CASE-7", proofed_on=date(2026, 1, 5))
    MailboxEntryFactory(address=patient, subject="Your lab results")
    sam = get_user_model().objects.create_user("sam", password=PASSWORD, is_staff=True)
    sam.groups.set(role_groups(Role))  # the registration role (adminconsole.roles) and the rest
    staff_device = TOTPDevice.objects.create(user=sam, name="phone", confirmed=True)

    # Staff: sign in with both factors, invite from the address page.
    staff = browser.new_context(base_url=live_server.url)
    page = staff.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"/console/addresses/{patient.pk}/")
    page.get_by_label("Username").fill("sam")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("6-digit code").fill(current_code(staff_device))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Patient invitation").wait_for()
    page.get_by_label("Patient's email address").fill("jane@home.example.net")
    page.get_by_role("button", name="Invite the patient").click()
    shown = page.locator("#invitation-link").inner_text()
    assert "Emailed to jane@home.example.net" in page.content()
    staff.close()

    # The email, as the relay received it: the link, and nothing about the patient's care.
    assert smtp_sink.handler.arrived.wait(10)
    [received] = smtp_sink.handler.messages
    message = email.message_from_bytes(received.data, policy=policy.default)
    text = message.get_body(("plain",)).get_content()
    for word in ("jane", "roe", "lab results", "portal.example"):
        assert word not in f"{message['Subject']} {text}".lower()
    url = re.search(r"https?://\S+/mail/invitation/\S+/", text).group(0)
    assert url == shown

    # The patient, in a browser of their own.
    patient_context = browser.new_context()
    problems: list[str] = []
    tab = patient_context.new_page()
    tab.set_default_timeout(15_000)
    tab.on("console",
           lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    tab.goto(url)
    tab.get_by_role("heading", name=f"Set up your secure mailbox for {PATIENT}").wait_for()
    assert "/mail/invitation/set-up/" in tab.url
    tab.get_by_label("Choose a password").fill(CHOSEN)
    tab.get_by_label("Type the password again").fill(CHOSEN)
    tab.get_by_role("button", name="Set up my mailbox").click()
    tab.get_by_role("heading", name="Set up your authenticator app").wait_for()
    user = get_user_model().objects.get(username=PATIENT)
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    tab.get_by_label("6-digit code").fill(current_code(device))
    tab.get_by_role("button", name="Confirm").click()
    tab.get_by_role("heading", name="Inbox").wait_for()
    assert tab.get_by_role("link", name="Your lab results").is_visible()
    assert problems == []

    # The link worked once.
    again = patient_context.new_page()
    assert again.goto(url).status == 404
    assert again.get_by_role("heading", name="This invitation link does not work").is_visible()
    patient_context.close()
    assert Invitation.objects.get().accepted_by == user
    assert list(AuditEvent.objects.filter(action__startswith="invitation.").order_by("id")
                .values_list("action", flat=True)) == [
        "invitation.issue", "invitation.emailed", "invitation.open", "invitation.accept",
        "invitation.token-failed",
    ]
