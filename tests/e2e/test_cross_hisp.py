"""The whole path in a real browser: a partner HISP (played by ``openssl cms``) sends a C-CDA over
SMTP; alice reads it with its trust banner; she answers with an attachment, the partner decrypts
and verifies it with openssl, returns a processed MDN over SMTP, and her Sent view shows it."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import Delivery, MailboxEntry, Message
from hisp.smtp import server
from tests.e2e.test_webmail import sign_in
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, crlf
from tests.hisp.mail.world import HOSTED, World, make_world
from tests.support.services import free_port, require_binary
from tests.webmail.personas import Persona

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
CCD = (Path(__file__).parent.parent / "webmail" / "data" / "ccd.xml").read_bytes()


@pytest.fixture
def world(settings, tmp_path: Path) -> Iterator[World]:
    require_binary("openssl")
    settings.HISP_CA_KEY_BITS = 2048
    with make_world(tmp_path) as built:
        yield built


@pytest.fixture
def backbone_port(transactional_db: None) -> Iterator[int]:
    controller = server.backbone(bind="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def _smtp(port: int, *, sender: str, to: str, wire: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(sender, [to], wire)


def _partner_mdn(world: World, message: Message) -> bytes:
    return crlf((
        f"From: {world.partner.address}\nTo: {world.alice.address}\n"
        f"Message-ID: <mdn-e2e-{message.pk}@{PARTNER}>\nSubject: Processed\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="b1"\n'
        "\n--b1\nContent-Type: text/plain\n\nProcessed.\n--b1\n"
        "Content-Type: message/disposition-notification\n\n"
        f"Reporting-UA: {PARTNER}; openssl\nFinal-Recipient: rfc822;{world.partner.address}\n"
        f"Original-Message-ID: {message.message_id}\n"
        "Disposition: automatic-action/MDN-sent-automatically;processed\n\n--b1--\n"
    ).encode())


def test_a_ccda_arrives_over_smtp_and_the_reply_reaches_processed(page, world, backbone_port, tmp_path):
    user = world.alice.users.get()
    alice = Persona(user=user, address=world.alice,
                    device=TOTPDevice.objects.create(user=user, name="phone", confirmed=True))

    # 1. The partner sends a signed and encrypted C-CDA over SMTP; our pipeline verifies it.
    inner = EmailMessage()
    inner["From"], inner["To"] = world.partner.address, world.alice.address
    inner["Subject"], inner["Message-ID"] = "Discharge summary", f"<ccd-e2e@{PARTNER}>"
    inner["Date"] = "Tue, 24 Nov 2026 06:00:00 +0000"
    inner.set_content("Summary of care attached.")
    inner.add_attachment(CCD, maintype="text", subtype="xml", filename="ccd.xml")
    wire = world.partner.protect(crlf(bytes(inner)), to=world.alice.address)
    _smtp(backbone_port, sender=world.partner.address, to=world.alice.address, wire=wire)
    drain()
    assert MailboxEntry.objects.filter(address=world.alice, subject="Discharge summary").exists()

    # 2. Alice signs in with her TOTP code, reads it and opens the C-CDA.
    sign_in(page, alice)
    page.get_by_role("link", name="Discharge summary").click()
    banner = page.locator("#trust-banner").inner_text()
    assert "Verified secure message" in banner and world.partner.address in banner
    page.get_by_role("link", name="View clinical document").click()
    assert page.locator("#cda-patient").inner_text() == "Isabella Isa Jones"

    # 3. She answers with an attachment; the page shows the partner's certificate is trusted.
    page.get_by_role("link", name="← Back to the message").click()
    page.get_by_role("link", name="Reply", exact=True).click()
    check = page.locator(f"#certificate-check li[data-recipient='{world.partner.address}']")
    check.wait_for()
    assert check.get_attribute("data-ok") == "true"
    report = tmp_path / "plan.txt"
    report.write_bytes(b"Follow-up plan for the patient.")
    page.get_by_label("Attachments").set_input_files(str(report))
    page.get_by_role("button", name="Send securely").click()
    page.get_by_role("heading", name="Delivery").wait_for()
    sent = Message.objects.get(direction=Message.Direction.OUTBOUND, kind=Message.Kind.REGULAR)

    # 4. Our pipeline protects and delivers it; the partner opens it with openssl cms.
    drain()
    received = [m for m in world.sink.handler.messages if world.partner.address in m.rcpt_tos]
    opened = world.partner.open(received[-1].data, our_domain=HOSTED)
    assert b"plan.txt" in opened and b"Re: Discharge summary" in opened

    # 5. The partner's processed MDN comes back over SMTP; the Sent view shows it.
    mdn = world.partner.protect(_partner_mdn(world, sent), to=world.alice.address)
    _smtp(backbone_port, sender=world.partner.address, to=world.alice.address, wire=mdn)
    drain()
    delivery = Delivery.objects.get(message=sent, recipient=world.partner.address)
    assert delivery.state == Delivery.State.PROCESSED
    page.reload()
    badge = page.locator(f"[data-state='{Delivery.State.PROCESSED}']")
    badge.wait_for()
    assert "Processed by the recipient's HISP" in badge.inner_text()
    assert page.csp_problems == []
