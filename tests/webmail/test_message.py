from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from hisp.models import AuditEvent, Delivery, DeliveryEvent, MailboxEntry, Message
from tests.factories import MailboxEntryFactory, MessageFactory
from tests.webmail.certs import certificate_row
from webmail.services import purge_trash

Box = MailboxEntry.SystemFolder
CCD = (Path(__file__).parent / "data" / "ccd.xml").read_bytes()


def _entry(alice, **message_fields):
    return MailboxEntryFactory(address=alice.address, message=MessageFactory(**message_fields))


def test_it_shows_the_trust_banner_with_signer_organisation_and_anchor(alice, alice_client):
    anchor = certificate_row(cn="Partner Root CA", org="Partner Trust Services",
                             binding="ca", bound_name="partner.example")
    entry = _entry(alice, signer_organisation="Partner Clinic", anchor=anchor)
    body = alice_client.get(f"/mail/m/{entry.pk}/").content.decode()
    assert "Verified secure message" in body
    assert "dr.who@partner.example" in body
    assert "Partner Clinic" in body
    assert "Partner Trust Services" in body


def test_it_marks_a_message_without_verified_content_as_not_verified(alice, alice_client):
    entry = _entry(alice, signer="")
    body = alice_client.get(f"/mail/m/{entry.pk}/").content.decode()
    assert "Not verified" in body


def test_opening_a_message_is_audited_and_marks_it_read(alice, alice_client):
    entry = _entry(alice)
    alice_client.get(f"/mail/m/{entry.pk}/")
    entry.refresh_from_db()
    assert entry.read
    event = AuditEvent.objects.get(action="message.open")
    assert event.actor == alice.user
    assert event.object_id == str(entry.message_id)
    alice_client.get(f"/mail/m/{entry.pk}/")
    assert AuditEvent.objects.filter(action="message.open").count() == 2


def test_outsider_gets_404_for_another_users_message(alice, charlie_client):
    entry = _entry(alice)
    assert charlie_client.get(f"/mail/m/{entry.pk}/").status_code == 404
    assert charlie_client.post(f"/mail/m/{entry.pk}/action/", {"action": "delete"}).status_code == 404
    assert not AuditEvent.objects.filter(action="message.open").exists()
    entry.refresh_from_db()
    assert entry.folder == Box.INBOX and not entry.read


def test_it_sanitises_html_mail_and_drops_remote_content(alice, alice_client):
    html = ('<p onclick="x()">Hello <b>there</b></p><script>alert(1)</script>'
            '<img src="https://tracker.example/pixel.gif"><a href="javascript:alert(2)">x</a>'
            '<div style="background:url(https://tracker.example/b)">bg</div>')
    entry = _entry(alice, html=html)
    body = alice_client.get(f"/mail/m/{entry.pk}/").content.decode()
    assert "<b>there</b>" in body
    assert "<script>alert(1)" not in body
    assert "tracker.example" not in body
    assert "javascript:" not in body
    assert "onclick" not in body


def test_it_shows_plain_text_as_text(alice, alice_client):
    entry = _entry(alice, text="Result <b>not bold</b> & more")
    body = alice_client.get(f"/mail/m/{entry.pk}/").content.decode()
    assert "Result &lt;b&gt;not bold&lt;/b&gt; &amp; more" in body


def test_it_lists_attachments_with_type_and_size_and_downloads_them_safely(alice, alice_client):
    entry = _entry(alice, attachments=[("../../etc/lab results.pdf", "application/pdf", b"%PDF-1.4 x" * 100)])
    page = alice_client.get(f"/mail/m/{entry.pk}/")
    attachment = page.context["opened"].attachments[0]
    assert attachment.filename == "lab results.pdf"
    assert "application/pdf, 1000\xa0bytes" in page.content.decode()
    response = alice_client.get(f"/mail/m/{entry.pk}/attachments/{attachment.index}/")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert "lab results.pdf" in response["Content-Disposition"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Type"] == "application/pdf"
    assert response.content == b"%PDF-1.4 x" * 100
    assert AuditEvent.objects.filter(action="attachment.download").exists()


def test_it_serves_active_content_types_as_plain_downloads(alice, alice_client):
    entry = _entry(alice, attachments=[("page.html", "text/html", b"<script>alert(1)</script>")])
    index = alice_client.get(f"/mail/m/{entry.pk}/").context["opened"].attachments[0].index
    response = alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/")
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment;")


def test_outsider_gets_404_for_another_users_attachment(alice, charlie_client, alice_client):
    entry = _entry(alice, attachments=[("ccd.xml", "text/xml", CCD)])
    index = alice_client.get(f"/mail/m/{entry.pk}/").context["opened"].attachments[0].index
    assert charlie_client.get(f"/mail/m/{entry.pk}/attachments/{index}/").status_code == 404
    assert charlie_client.get(f"/mail/m/{entry.pk}/attachments/{index}/view/").status_code == 404


def test_it_answers_404_for_an_attachment_index_that_does_not_exist(alice, alice_client):
    entry = _entry(alice)
    assert alice_client.get(f"/mail/m/{entry.pk}/attachments/7/").status_code == 404


def test_it_renders_a_ccda_attachment_readably(alice, alice_client):
    entry = _entry(alice, attachments=[("ccd.xml", "text/xml", CCD)])
    page = alice_client.get(f"/mail/m/{entry.pk}/")
    assert b"View clinical document" in page.content
    index = page.context["opened"].attachments[0].index
    body = alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/view/").content.decode()
    assert "Continuity of Care Document" in body
    assert "Isabella Isa Jones" in body
    assert "1975-05-01" in body
    assert "Dr Henry Seven" in body and "Community Health and Hospitals" in body
    assert "2024-03-15 10:15" in body
    assert "Allergies and Intolerances" in body and "Penicillin G benzathine" in body
    assert "Problem details" in body and "<ol>" in body
    assert "<script>alert(1)" not in body
    assert "javascript:" not in body


def test_it_refuses_a_cda_with_a_doctype(alice, alice_client):
    evil = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&e;</title></ClinicalDocument>')
    entry = _entry(alice, attachments=[("evil.xml", "text/xml", evil)])
    index = alice_client.get(f"/mail/m/{entry.pk}/").context["opened"].attachments[0].index
    body = alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/view/").content.decode()
    assert "declares a DTD" in body
    assert "root:" not in body


def _xdm(documents: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("IHE_XDM/SUBSET01/METADATA.XML", b"<metadata/>")
        archive.writestr("INDEX.HTM", b"<html></html>")
        for name, data in documents.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_it_opens_an_xdm_package_and_renders_its_cda(alice, alice_client):
    package = _xdm({"IHE_XDM/SUBSET01/DOC0001.XML": CCD, "IHE_XDM/SUBSET01/scan.pdf": b"%PDF"})
    entry = _entry(alice, attachments=[("xdm.zip", "application/zip", package)])
    page = alice_client.get(f"/mail/m/{entry.pk}/")
    assert b"Open XDM package" in page.content
    index = page.context["opened"].attachments[0].index
    listing = alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/view/")
    names = [d.name for d in listing.context["xdm_documents"]]
    assert names == ["IHE_XDM/SUBSET01/DOC0001.XML", "IHE_XDM/SUBSET01/scan.pdf"]
    member = listing.context["xdm_documents"][0].index
    rendered = alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/xdm/{member}/")
    assert b"Isabella Isa Jones" in rendered.content
    pdf = listing.context["xdm_documents"][1].index
    download = alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/xdm/{pdf}/")
    assert download["Content-Disposition"].startswith("attachment;")
    assert download.content == b"%PDF"


def test_it_refuses_a_zip_bomb_in_an_xdm_package(alice, alice_client):
    bomb = _xdm({"IHE_XDM/SUBSET01/DOC0001.XML": b"\0" * (30 * 1024 * 1024)})
    entry = _entry(alice, attachments=[("xdm.zip", "application/zip", bomb)])
    index = alice_client.get(f"/mail/m/{entry.pk}/").context["opened"].attachments[0].index
    body = alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/view/").content.decode()
    assert "too large" in body


def test_outsider_gets_404_for_another_users_xdm_document(alice, alice_client, charlie_client):
    package = _xdm({"IHE_XDM/SUBSET01/DOC0001.XML": CCD})
    entry = _entry(alice, attachments=[("xdm.zip", "application/zip", package)])
    index = alice_client.get(f"/mail/m/{entry.pk}/").context["opened"].attachments[0].index
    assert charlie_client.get(f"/mail/m/{entry.pk}/attachments/{index}/xdm/1/").status_code == 404


def test_it_answers_404_for_a_missing_xdm_member(alice, alice_client):
    package = _xdm({"IHE_XDM/SUBSET01/DOC0001.XML": CCD})
    entry = _entry(alice, attachments=[("xdm.zip", "application/zip", package)])
    index = alice_client.get(f"/mail/m/{entry.pk}/").context["opened"].attachments[0].index
    assert alice_client.get(f"/mail/m/{entry.pk}/attachments/{index}/xdm/0/").status_code == 404


def test_delete_moves_to_trash_and_purge_removes_it_after_retention(alice, alice_client, settings):
    entry = _entry(alice)
    alice_client.post(f"/mail/m/{entry.pk}/action/", {"action": "delete"})
    entry.refresh_from_db()
    assert entry.folder == Box.TRASH
    assert purge_trash() == 0
    later = timezone.now() + settings.HISP_TRASH_RETENTION + timedelta(minutes=1)
    assert purge_trash(now=later) == 1
    assert not MailboxEntry.objects.filter(pk=entry.pk).exists()
    assert Message.objects.filter(pk=entry.message_id).exists()


def test_deleting_from_trash_purges_at_once(alice, alice_client):
    entry = MailboxEntryFactory(address=alice.address, folder=Box.TRASH, trashed_at=timezone.now())
    alice_client.post(f"/mail/m/{entry.pk}/action/", {"action": "delete"})
    assert not MailboxEntry.objects.filter(pk=entry.pk).exists()


def test_moving_out_of_trash_stops_the_retention_clock(alice, alice_client):
    entry = MailboxEntryFactory(address=alice.address, folder=Box.TRASH, trashed_at=timezone.now())
    alice_client.post(f"/mail/m/{entry.pk}/action/", {"action": "move", "target": "inbox"})
    entry.refresh_from_db()
    assert entry.folder == Box.INBOX and entry.trashed_at is None


def test_it_shows_a_per_recipient_timeline_with_sentences_for_sent_mail(alice, alice_client):
    message = MessageFactory(direction=Message.Direction.OUTBOUND, state=Message.State.SENT,
                             sender="alice@clinic.example", to=["x@partner.example"])
    entry = MailboxEntryFactory(address=alice.address, message=message, folder=Box.SENT)
    ok = Delivery.objects.create(message=message, recipient="x@partner.example", state="processed")
    bad = Delivery.objects.create(message=message, recipient="y@partner.example", state="failed",
                                  detail="no-recipient-certificate")
    for state in ("queued", "sent", "processed"):
        DeliveryEvent.objects.create(delivery=ok, state=state)
    DeliveryEvent.objects.create(delivery=bad, state="queued")
    DeliveryEvent.objects.create(delivery=bad, state="failed", detail="no-recipient-certificate")
    body = alice_client.get(f"/mail/m/{entry.pk}/").content.decode()
    assert "confirmed it received the message" in body
    assert "No certificate was found for this recipient" in body
    assert body.index("x@partner.example") < body.index("y@partner.example")


def test_a_very_long_text_is_shown_in_part_with_the_whole_a_click_away(alice, alice_client,
                                                                       charlie_client):
    from webmail.views.message import TEXT_SHOWN_CHARS

    text = "Opening line of the report.\n" + "x" * TEXT_SHOWN_CHARS + "\nClosing line.\n"
    entry = _entry(alice, text=text)
    page = alice_client.get(f"/mail/m/{entry.pk}/")
    body = page.content.decode()
    assert page.status_code == 200
    assert "Opening line of the report." in body and "Closing line." not in body
    assert len(body) < TEXT_SHOWN_CHARS + 100_000
    assert f"/mail/m/{entry.pk}/text/" in body
    download = alice_client.get(f"/mail/m/{entry.pk}/text/")
    assert download.status_code == 200
    assert download["Content-Type"] == "text/plain; charset=utf-8"
    assert download["Content-Disposition"].startswith("attachment")
    whole = download.content.decode()
    assert whole.startswith("Opening line") and whole.rstrip().endswith("Closing line.")
    assert AuditEvent.objects.filter(action="message.text-download").count() == 1
    assert charlie_client.get(f"/mail/m/{entry.pk}/text/").status_code == 404


def test_a_short_text_has_no_download_link(alice, alice_client):
    entry = _entry(alice, text="Short.")
    assert f"/mail/m/{entry.pk}/text/" not in alice_client.get(f"/mail/m/{entry.pk}/").content.decode()
