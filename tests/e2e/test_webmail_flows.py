"""End to end in headless Chromium: the everyday webmail flows of a busy clinician and of a
patient. Replying, replying to all and forwarding a received message and finding the copy in
Sent; the delivery status a sender sees as the mail flow moves each recipient on; folders, Trash
and flags; search; downloading an attachment; a patient's own mailbox; a phone-sized screen.
Every page visited must be free of CSP violations and JavaScript errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate

import pytest
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from agent.errors import Code
from hisp.models import (
    Address,
    AuditEvent,
    Delivery,
    DeliveryEvent,
    Domain,
    MailboxEntry,
    Message,
)
from hisp.services import tracking
from tests.e2e.test_webmail import sign_in
from tests.e2e.watch import script_errors
from tests.factories import (
    AddressFactory,
    AddressGrantFactory,
    DomainFactory,
    MailboxEntryFactory,
    MessageFactory,
    UserFactory,
)
from tests.webmail.personas import Persona, make_persona

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
Box = MailboxEntry.SystemFolder
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def watched(page) -> Iterator[object]:
    """The page, failing the test on any JavaScript error or CSP violation it logged."""
    errors = script_errors(page)
    yield page
    assert page.csp_problems == []
    assert errors == []


def referral(*, to: list[str], cc: list[str], subject: str = "Referral: cardiology",
             text: str = "Please see the attached ECG.\nThanks, Dr Who",
             attachments: tuple[tuple[str, str, bytes], ...] = ()) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Dr Who <dr.who@partner.example>"
    mail["To"] = ", ".join(to)
    mail["Cc"] = ", ".join(cc)
    mail["Subject"] = subject
    mail["Date"] = formatdate()
    mail["Message-ID"] = "<ref-1@partner.example>"
    mail.set_content(text)
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/", 1)
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return bytes(mail)


def received(persona: Persona, *, spelled: str = "", **kwargs: object) -> MailboxEntry:
    """A verified inbound referral to the persona (as ``spelled`` in To), copied to bob and to
    a partner clinician."""
    to = [spelled or persona.address.address, "bob@clinic.example"]
    cc = ["nurse.joy@partner.example"]
    attachments = kwargs.pop("attachments", ())
    subject = str(kwargs.pop("subject", "Referral: cardiology"))
    content = referral(to=to, cc=cc, subject=subject,
                       attachments=attachments)  # type: ignore[arg-type]
    message = MessageFactory(subject=subject, sender="Dr Who <dr.who@partner.example>",
                             to=to + cc, content=content, **kwargs)
    return MailboxEntryFactory(address=persona.address, message=message, subject=subject,
                               sender="Dr Who <dr.who@partner.example>", recipients=to + cc,
                               snippet="Please see the attached ECG.",
                               body_text="Please see the attached ECG.",
                               has_attachments=bool(attachments))


def send(page) -> Message:
    page.get_by_role("button", name="Send securely").click()
    page.get_by_role("heading", name="Delivery").wait_for()
    return Message.objects.filter(direction=Message.Direction.OUTBOUND).latest("id")


# --- Reply, reply all, forward -------------------------------------------------------------------
def test_a_clinician_replies_to_a_referral_and_finds_the_reply_in_sent(watched):
    page = watched
    alice = make_persona("alice", "clinic.example")
    entry = received(alice)
    sign_in(page, alice)
    page.get_by_role("link", name="Referral: cardiology").click()
    page.get_by_role("link", name="Reply", exact=True).click()
    page.get_by_role("heading", name="Write a message").wait_for()
    assert page.get_by_label("To", exact=True).input_value() == "dr.who@partner.example"
    assert page.get_by_label("Cc", exact=True).input_value() == ""
    assert page.get_by_label("Subject").input_value() == "Re: Referral: cardiology"
    body = page.get_by_label("Body").input_value()
    assert "dr.who@partner.example" in body.split("wrote:")[0]
    assert "> Please see the attached ECG.\n> Thanks, Dr Who" in body
    page.get_by_label("Body").press("Control+Home")
    page.get_by_label("Body").type("Seen today; ECG normal. ")
    message = send(page)
    assert message.envelope_to == ["dr.who@partner.example"]
    assert message.subject == "Re: Referral: cardiology"
    assert b"> Thanks, Dr Who" in bytes(message.raw)
    # The thread's original stays where it was, read.
    entry.refresh_from_db()
    assert (entry.folder, entry.read) == (Box.INBOX, True)

    page.get_by_role("navigation", name="Folders").get_by_role("link", name="Sent").click()
    row = page.locator("tr", has=page.get_by_role("link", name="Re: Referral: cardiology"))
    assert row.locator("td.from").inner_text() == "dr.who@partner.example"
    assert row.locator(".badge").get_attribute("data-state") == "queued"
    row.get_by_role("link").click()
    assert "Seen today; ECG normal." in page.locator("#message-body").inner_text()


def test_reply_all_addresses_the_sender_and_copies_everyone_else_but_me(watched):
    page = watched
    alice = make_persona("alice", "clinic.example")
    received(alice)
    sign_in(page, alice)
    page.get_by_role("link", name="Referral: cardiology").click()
    page.get_by_role("link", name="Reply all").click()
    page.get_by_role("heading", name="Write a message").wait_for()
    assert page.get_by_label("To", exact=True).input_value() == "dr.who@partner.example"
    assert page.get_by_label("Cc", exact=True).input_value() == (
        "bob@clinic.example, nurse.joy@partner.example")
    assert page.get_by_label("Subject").input_value() == "Re: Referral: cardiology"
    page.locator("#certificate-check li[data-recipient='nurse.joy@partner.example']").wait_for()
    message = send(page)
    assert message.envelope_to == ["dr.who@partner.example", "bob@clinic.example",
                                   "nurse.joy@partner.example"]
    assert alice.address.address not in message.envelope_to
    sent = MailboxEntry.objects.get(message=message, address=alice.address)
    assert sent.folder == Box.SENT
    # Replying to one's own sent message answers its recipients, not oneself.
    page.get_by_role("link", name="Reply", exact=True).click()
    assert page.get_by_label("To", exact=True).input_value() == (
        "dr.who@partner.example, bob@clinic.example, nurse.joy@partner.example")
    assert page.get_by_label("Subject").input_value() == "Re: Referral: cardiology"


def test_the_reply_quotes_the_time_the_clinician_saw_on_the_message(watched, settings):
    page = watched
    settings.TIME_ZONE = "America/Chicago"
    alice = make_persona("alice", "clinic.example")
    entry = received(alice)
    MailboxEntry.objects.filter(pk=entry.pk).update(
        received_at=datetime(2026, 1, 5, 15, 30, tzinfo=UTC))
    sign_in(page, alice)
    page.get_by_role("link", name="Referral: cardiology").click()
    shown = page.locator("dl.headers dt:text-is('Date') + dd").inner_text()
    assert shown == "Monday, January 5, 2026 09:30"
    page.get_by_role("link", name="Reply", exact=True).click()
    assert "On 2026-01-05 09:30, Dr Who" in page.get_by_label("Body").input_value()


def test_reply_all_leaves_me_out_however_the_sender_spelled_my_address(watched):
    page = watched
    alice = make_persona("alice", "clinic.example")
    # Hosted addresses are found ignoring case: this is alice's own mailbox, not a colleague.
    received(alice, spelled="Alice Smith <Alice@CLINIC.example>")
    sign_in(page, alice)
    page.get_by_role("link", name="Referral: cardiology").click()
    page.get_by_role("link", name="Reply all").click()
    page.get_by_role("heading", name="Write a message").wait_for()
    assert page.get_by_label("To", exact=True).input_value() == "dr.who@partner.example"
    assert page.get_by_label("Cc", exact=True).input_value() == (
        "bob@clinic.example, nurse.joy@partner.example")


def test_forward_carries_the_original_attachments_and_an_added_file(watched, tmp_path):
    page = watched
    alice = make_persona("alice", "clinic.example")
    ecg = b"%PDF-1.7 ECG tracing"
    received(alice, attachments=(("ecg.pdf", "application/pdf", ecg),))
    note = tmp_path / "note.txt"
    note.write_bytes(b"cover note")
    sign_in(page, alice)
    page.get_by_role("link", name="Referral: cardiology").click()
    page.get_by_role("link", name="Forward").click()
    page.get_by_role("heading", name="Write a message").wait_for()
    assert page.get_by_label("To", exact=True).input_value() == ""
    assert page.get_by_label("Subject").input_value() == "Fwd: Referral: cardiology"
    body = page.get_by_label("Body").input_value()
    assert "---------- Forwarded message ----------" in body
    assert "Please see the attached ECG." in body
    assert "ecg.pdf" in page.locator("#compose-form").inner_text()
    page.get_by_label("To", exact=True).fill("cardio@hospital.example")
    page.get_by_label("Attachments").set_input_files(str(note))
    message = send(page)
    assert message.envelope_to == ["cardio@hospital.example"]
    assert message.subject == "Fwd: Referral: cardiology"
    names = page.locator("ul.attachments li b").all_inner_texts()
    assert sorted(names) == ["ecg.pdf", "note.txt"]
    assert page.locator("#message-body").inner_text().count("Forwarded message") == 1


# --- Delivery status ---------------------------------------------------------------------------
def test_the_sender_sees_each_recipients_delivery_state_as_the_mail_flow_moves_it(watched):
    page = watched
    alice = make_persona("alice", "clinic.example")
    sign_in(page, alice)
    page.get_by_role("link", name="Write a message").click()
    page.get_by_label("To", exact=True).fill(
        "a@partner.example, b@partner.example, c@partner.example, d@partner.example")
    page.get_by_label("Subject").fill("Lab results")
    page.get_by_label("Body").fill("Results attached.")
    message = send(page)
    badges = page.locator("#delivery-heading ~ .delivery .badge")
    assert badges.evaluate_all("els => els.map(e => e.dataset.state)") == ["queued"] * 4

    # What egress and the MDN/DSN tracking write (hisp.services.outbound and .tracking).
    now = timezone.now()
    deliveries = {d.recipient: d for d in message.deliveries.all()}
    for recipient in ("b@partner.example", "c@partner.example", "d@partner.example"):
        Delivery.objects.filter(pk=deliveries[recipient].pk).update(
            state=Delivery.State.SENT, sent_at=now)
        DeliveryEvent.objects.create(delivery=deliveries[recipient], state=Delivery.State.SENT,
                                     detail="250 2.0.0 queued as 4F2")
        deliveries[recipient].refresh_from_db()
    assert tracking.processed(deliveries["b@partner.example"], at=now)
    assert tracking.processed(deliveries["c@partner.example"], at=now)
    assert tracking.dispatched(deliveries["c@partner.example"], at=now, final_delivery=True)
    assert tracking.fail(deliveries["d@partner.example"],
                         detail=f"{Code.NO_RECIPIENT_CERTIFICATE}: none in DNS or LDAP",
                         status="5.7.30", why="no certificate")
    page.reload()
    rows = page.locator("section[aria-labelledby=delivery-heading] .delivery")
    assert rows.count() == 4
    seen = {}
    for i in range(4):
        row = rows.nth(i)
        recipient = row.locator("h3").inner_text().split()[0]
        seen[recipient] = (row.locator(".badge").get_attribute("data-state"),
                           row.locator("p").first.inner_text())
    assert seen == {
        "a@partner.example": ("queued", "Waiting to be encrypted and sent."),
        "b@partner.example": (
            "processed", "The recipient's mail system confirmed it received the message."),
        "c@partner.example": ("dispatched", "Delivered to the recipient's mailbox."),
        "d@partner.example": (
            "failed", "No certificate was found for this recipient, so the message cannot be "
                      "encrypted to them."),
    }
    failed = rows.nth(3)
    steps = failed.locator("ol.timeline li")
    assert steps.count() == 3  # queued, sent, failed
    assert "none in DNS or LDAP" in steps.nth(2).inner_text()
    assert "failed" in (steps.nth(2).get_attribute("class") or "")

    page.get_by_role("navigation", name="Folders").get_by_role("link", name="Sent").click()
    row = page.locator("tr", has=page.get_by_role("link", name="Lab results"))
    assert row.locator(".badge").inner_text() == "Failed"


# --- Folders, Trash, read and flag ---------------------------------------------------------------
def test_a_message_moves_to_a_user_folder_to_trash_and_back(watched):
    page = watched
    alice = make_persona("alice", "clinic.example")
    entry = received(alice)
    sign_in(page, alice)
    page.get_by_role("link", name="Manage folders…").click()
    page.get_by_label("Name").fill("Cardiology")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Folder created.").wait_for()

    page.get_by_role("navigation", name="Folders").get_by_role("link", name="Inbox").click()
    page.get_by_role("link", name="Referral: cardiology").click()
    page.get_by_label("Move to").select_option(label="Cardiology")
    page.get_by_role("button", name="Move", exact=True).click()
    page.get_by_role("heading", name="Inbox").wait_for()
    assert page.get_by_role("link", name="Referral: cardiology").count() == 0
    page.get_by_role("navigation", name="Folders").get_by_role("link", name="Cardiology").click()
    page.get_by_role("heading", name="Cardiology").wait_for()
    page.get_by_role("link", name="Referral: cardiology").click()
    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_text("Moved to Trash.").wait_for()
    entry.refresh_from_db()
    assert entry.folder == Box.TRASH and entry.trashed_at is not None

    page.get_by_role("navigation", name="Folders").get_by_role("link", name="Trash").click()
    page.get_by_role("link", name="Referral: cardiology").click()
    page.get_by_label("Move to").select_option(label="Inbox")
    page.get_by_role("button", name="Move", exact=True).click()
    page.get_by_text("Moved.").wait_for()
    entry.refresh_from_db()
    assert (entry.folder, entry.trashed_at) == (Box.INBOX, None)
    page.get_by_role("navigation", name="Folders").get_by_role("link", name="Inbox").click()
    assert page.get_by_role("link", name="Referral: cardiology").count() == 1
    moves = AuditEvent.objects.filter(action="message.move", object_id=str(entry.message_id))
    assert [e.detail["folder"] for e in moves.order_by("id")] == ["user", "trash", "inbox"]


def test_emptying_trash_asks_first_and_then_deletes_only_trash_forever(watched):
    page = watched
    alice = make_persona("alice", "clinic.example")
    kept = received(alice)
    trashed = MailboxEntryFactory.create_batch(4, address=alice.address, folder=Box.TRASH,
                                               trashed_at=timezone.now())
    sign_in(page, alice)
    page.get_by_role("navigation", name="Folders").get_by_role("link", name="Trash").click()
    # One at a time: the message page and the list both say it is gone for good.
    page.locator("td.subject a").first.click()
    page.get_by_role("button", name="Delete forever").click()
    page.get_by_text("Deleted forever.").wait_for()
    page.locator("td.subject input, td.select input[name=entry]").first.check()
    page.get_by_role("button", name="Delete forever").click()
    page.get_by_text("Deleted 1 message forever.").wait_for()
    assert MailboxEntry.objects.filter(folder=Box.TRASH).count() == 2
    page.get_by_role("link", name="Empty Trash").click()
    page.get_by_role("heading", name="Empty Trash?").wait_for()
    assert "2 messages" in page.locator("main").inner_text()
    page.get_by_role("link", name="Cancel").click()
    page.get_by_role("heading", name="Trash").wait_for()
    assert MailboxEntry.objects.filter(folder=Box.TRASH).count() == 2

    page.get_by_role("link", name="Empty Trash").click()
    page.get_by_role("button", name="Delete 2 messages forever").click()
    page.get_by_text("Deleted 2 messages forever.").wait_for()
    page.get_by_text("No messages in Trash.").wait_for()
    assert not MailboxEntry.objects.filter(pk__in=[t.pk for t in trashed]).exists()
    assert MailboxEntry.objects.filter(pk=kept.pk, folder=Box.INBOX).exists()
    assert AuditEvent.objects.filter(action="message.purge").count() == 4
    # Nothing to empty: no button.
    assert page.get_by_role("link", name="Empty Trash").count() == 0


def test_read_unread_and_flag_toggle_from_the_list_and_the_message(watched):
    page = watched
    alice = make_persona("alice", "clinic.example")
    entry = received(alice)
    sign_in(page, alice)
    folders = page.get_by_role("navigation", name="Folders")
    assert folders.get_by_role("link", name="Inbox").locator(".count").inner_text() == "1"
    page.get_by_role("link", name="Referral: cardiology").click()
    assert folders.get_by_role("link", name="Inbox").locator(".count").count() == 0

    page.get_by_role("button", name="Flag", exact=True).click()
    page.get_by_role("heading", name="Referral: cardiology").wait_for()
    entry.refresh_from_db()
    assert entry.flagged
    page.get_by_role("button", name="Remove flag").wait_for()

    page.get_by_role("button", name="Mark unread").click()
    page.get_by_role("heading", name="Inbox").wait_for()
    row = page.locator("tr", has=page.get_by_role("link", name="Referral: cardiology"))
    assert "unread" in row.get_attribute("class")
    assert row.get_by_role("img", name="Flagged").count() == 1
    assert folders.get_by_role("link", name="Inbox").locator(".count").inner_text() == "1"

    row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Mark read").click()
    page.get_by_role("heading", name="Inbox").wait_for()
    row = page.locator("tr", has=page.get_by_role("link", name="Referral: cardiology"))
    assert "unread" not in (row.get_attribute("class") or "")
    row.get_by_role("link").click()
    page.get_by_role("button", name="Remove flag").click()
    page.get_by_role("button", name="Flag", exact=True).wait_for()
    entry.refresh_from_db()
    assert (entry.read, entry.flagged) == (True, False)
    actions = list(AuditEvent.objects.filter(object_id=str(entry.message_id))
                   .filter(action__in=["message.flag", "message.unflag", "message.mark-read",
                                       "message.mark-unread"]).order_by("id")
                   .values_list("action", flat=True))
    assert actions == ["message.flag", "message.mark-unread", "message.mark-read",
                       "message.unflag"]


def test_flag_and_empty_trash_are_404_for_an_outsider(watched):
    page = watched
    alice = make_persona("alice", "clinic.example")
    charlie = make_persona("charlie", "elsewhere.example")
    entry = received(alice)
    MailboxEntryFactory(address=alice.address, folder=Box.TRASH, trashed_at=timezone.now())
    sign_in(page, charlie)
    token = page.locator("input[name=csrfmiddlewaretoken]").first.input_value()
    headers = {"X-CSRFToken": token, "Referer": page.url}
    flag = page.request.post(f"/mail/m/{entry.pk}/action/", form={"action": "flag"},
                             headers=headers)
    assert flag.status == 404
    empty = page.request.post(f"/mail/a/{alice.address.pk}/trash/empty/", headers=headers,
                              form={"before": timezone.now().isoformat()})
    assert empty.status == 404
    assert page.request.get(f"/mail/a/{alice.address.pk}/trash/empty/").status == 404
    entry.refresh_from_db()
    assert not entry.flagged
    assert MailboxEntry.objects.filter(address=alice.address, folder=Box.TRASH).count() == 1


# --- Search --------------------------------------------------------------------------------------
def test_search_finds_by_word_copes_with_quotes_and_says_when_nothing_matches(watched):
    page = watched
    alice = make_persona("alice", "clinic.example")
    received(alice)
    MailboxEntryFactory(address=alice.address, subject="O'Brien follow-up",
                        body_text='Patient said "chest pain" & <dizziness>')
    sign_in(page, alice)
    search = page.get_by_role("searchbox", name="Search this mailbox")
    search.fill("cardiology")
    search.press("Enter")
    page.get_by_role("heading", name="Search: cardiology").wait_for()
    assert page.locator("td.subject a").count() == 1

    search = page.get_by_role("searchbox", name="Search this mailbox")
    search.fill('"chest pain" O\'Brien')
    search.press("Enter")
    page.get_by_role("heading", name='Search: "chest pain" O\'Brien').wait_for()
    assert "O'Brien follow-up" in page.locator("td.subject a").all_inner_texts()[0]

    hostile = '<dizziness> & "x\' OR 1=1 --'
    search = page.get_by_role("searchbox", name="Search this mailbox")
    search.fill(hostile)
    search.press("Enter")
    page.get_by_role("heading", name=f"Search: {hostile}").wait_for()
    assert page.get_by_role("searchbox", name="Search this mailbox").input_value() == hostile
    assert page.locator("td.subject a").count() <= 1

    search = page.get_by_role("searchbox", name="Search this mailbox")
    search.fill("zebrafish")
    search.press("Enter")
    status = page.get_by_role("status")
    assert "No messages match “zebrafish”." in status.inner_text()
    audited = list(AuditEvent.objects.filter(action="mailbox.search").order_by("id")
                   .values_list("detail__query", "detail__results"))
    assert audited[0] == ("cardiology", 1)
    assert audited[-1] == ("zebrafish", 0)
    assert len(audited) == 4


# --- Attachments ---------------------------------------------------------------------------------
def test_downloading_an_attachment_gives_the_file_and_is_audited(watched):
    page = watched
    alice = make_persona("alice", "clinic.example")
    pdf = b"%PDF-1.7 ECG tracing"
    entry = received(alice, attachments=(("ECG 2026/01.pdf", "application/pdf", pdf),
                                         ("note.html", "text/html", b"<script>x</script>")))
    sign_in(page, alice)
    page.get_by_role("link", name="Referral: cardiology").click()
    with page.expect_download() as info:
        page.get_by_role("link", name="Download 01.pdf").click()
    download = info.value
    assert download.suggested_filename == "01.pdf"
    assert open(download.path(), "rb").read() == pdf
    href = page.get_by_role("link", name="Download 01.pdf").get_attribute("href")
    response = page.request.get(href)
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"] == 'attachment; filename="01.pdf"'
    note = page.get_by_role("link", name="Download note.html").get_attribute("href")
    active = page.request.get(note)
    assert active.headers["content-type"] == "application/octet-stream"
    downloads = AuditEvent.objects.filter(action="attachment.download",
                                          object_id=str(entry.message_id))
    assert downloads.count() == 3
    assert {e.actor_id for e in downloads} == {alice.user.pk}


# --- A patient -----------------------------------------------------------------------------------
def patient(local: str) -> Persona:
    portal = DomainFactory(name="portal.example", kind=Domain.Kind.PATIENT_PORTAL)
    user = UserFactory(username=f"{local}@portal.example")
    address = AddressFactory(address=f"{local}@portal.example", domain=portal,
                             kind=Address.Kind.PATIENT, display_name=local.title())
    AddressGrantFactory(user=user, address=address)
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    return Persona(user=user, address=address, device=device)


def test_a_patient_sees_only_their_own_mailbox_and_is_told_plainly_when_a_send_is_refused(
    watched,
):
    page = watched
    jane = patient("jane.roe")
    john = patient("john.doe")
    alice = make_persona("alice", "clinic.example")
    MailboxEntryFactory(address=jane.address, subject="Your lab results")
    MailboxEntryFactory(address=john.address, subject="John's biopsy")
    MailboxEntryFactory(address=alice.address, subject="Clinic rota")
    sign_in(page, jane)
    text = page.locator("body").inner_text()
    assert "Your lab results" in text
    assert "John's biopsy" not in text and "Clinic rota" not in text
    assert page.get_by_role("navigation", name="Mailboxes").count() == 0
    other = MailboxEntry.objects.get(address=john.address)
    assert page.request.get(f"/mail/m/{other.pk}/").status == 404
    assert page.request.get(f"/mail/a/{john.address.pk}/inbox/").status == 404
    found = page.request.get(f"/mail/a/{jane.address.pk}/search/?q=biopsy")
    assert "John's biopsy" not in found.text()

    page.get_by_role("link", name="Write a message").click()
    assert page.get_by_label("From").locator("option").all_inner_texts() == [
        "jane.roe@portal.example"]
    # The directory suggests clinicians, never another patient.
    page.get_by_label("To", exact=True).press_sequentially("al", delay=50)
    page.locator("#suggest-to option[value='alice@clinic.example']").wait_for(state="attached")
    page.get_by_label("To", exact=True).fill("")
    page.get_by_label("To", exact=True).press_sequentially("joh", delay=50)
    page.wait_for_timeout(800)
    assert page.locator("#suggest-to option").count() == 0

    page.get_by_label("To", exact=True).fill("dr alice at the clinic")
    page.get_by_label("Subject").fill("Question")
    page.get_by_role("button", name="Send securely").click()
    error = page.locator("#id_to").locator("xpath=..").get_by_text(
        "Enter Direct addresses separated by commas.")
    error.wait_for()
    assert not Message.objects.filter(direction=Message.Direction.OUTBOUND).exists()
    page.get_by_label("To", exact=True).fill("alice@clinic.example")
    message = send(page)
    assert message.envelope_from == "jane.roe@portal.example"


# --- A phone -------------------------------------------------------------------------------------
def on_screen(page, locator) -> bool:
    box = locator.bounding_box()
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1


def fits_the_width(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_inbox_message_and_compose_work_on_a_phone(browser, live_server, tmp_path):
    context = browser.new_context(base_url=live_server.url, viewport=PHONE, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems = script_errors(page)
    try:
        alice = make_persona("alice", "clinic.example")
        long_name = "ecg-tracing-with-a-long-name-2026-01-05.pdf"
        received(alice, attachments=((long_name, "application/pdf", b"%PDF-1.7"),))
        sign_in(page, alice)
        assert fits_the_width(page)
        link = page.get_by_role("link", name="Referral: cardiology")
        assert on_screen(page, link)
        assert on_screen(page, page.get_by_role("link", name="Write a message"))
        assert on_screen(page, page.get_by_role("searchbox", name="Search this mailbox"))
        link.click()
        page.get_by_role("heading", name="Referral: cardiology").wait_for()
        assert fits_the_width(page)
        for name in ("Reply", "Reply all", "Forward"):
            assert on_screen(page, page.get_by_role("link", name=name, exact=True))
        assert on_screen(page, page.get_by_role("button", name="Delete", exact=True))
        assert on_screen(page, page.get_by_role("link", name=f"Download {long_name}"))
        page.get_by_role("link", name="Reply", exact=True).click()
        page.get_by_role("heading", name="Write a message").wait_for()
        assert fits_the_width(page)
        for field in ("To", "Subject", "Body"):
            assert on_screen(page, page.get_by_label(field, exact=True))
        send_button = page.get_by_role("button", name="Send securely")
        send_button.scroll_into_view_if_needed()
        assert on_screen(page, send_button)
        send_button.tap()
        page.get_by_role("heading", name="Delivery").wait_for()
        assert fits_the_width(page)
        assert Message.objects.filter(direction=Message.Direction.OUTBOUND).count() == 1
        assert problems == []
    finally:
        context.close()
