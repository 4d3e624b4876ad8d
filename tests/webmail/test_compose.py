from __future__ import annotations

import re

from django.core.files.uploadedfile import SimpleUploadedFile

from hisp.models import AddressGrant, Delivery, MailboxEntry, Message
from hisp.services.identity import add_address, add_domain
from tests.factories import AddressGrantFactory, MailboxEntryFactory, MessageFactory
from tests.webmail.personas import signed_in
from webmail.models import Contact, Draft

Box = MailboxEntry.SystemFolder


def _send(client, sender, **fields):
    data = {"sender": sender.pk, "to": "dana@partner.example", "cc": "", "subject": "Referral",
            "body": "Please see.", "delivery_notification": "on"}
    data.update(fields)
    return client.post("/mail/compose/", data)


def test_it_offers_only_addresses_the_user_may_send_as(alice, bob, alice_client):
    AddressGrantFactory(user=alice.user, address=bob.address, role=AddressGrant.Role.READ)
    response = alice_client.get("/mail/compose/")
    choices = [a.address for a in response.context["form"].fields["sender"].queryset]
    assert choices == ["alice@clinic.example"]
    assert response.context["form"]["delivery_notification"].value() is True


def test_it_queues_an_outbound_message_with_an_attachment(alice, alice_client):
    upload = SimpleUploadedFile("summary.pdf", b"%PDF-1.7 data", content_type="application/pdf")
    response = _send(alice_client, alice.address, to="dana@partner.example, eve@partner.example",
                     attachments=upload)
    assert response.status_code == 302
    message = Message.objects.get(direction=Message.Direction.OUTBOUND)
    assert message.state == Message.State.QUEUED
    assert message.envelope_from == "alice@clinic.example"
    assert sorted(message.envelope_to) == ["dana@partner.example", "eve@partner.example"]
    raw = bytes(message.raw)
    assert b"summary.pdf" in raw
    assert b"X-DIRECT-FINAL-DESTINATION-DELIVERY" in raw
    assert Delivery.objects.filter(message=message, state="queued").count() == 2
    sent = MailboxEntry.objects.get(message=message, address=alice.address, folder=Box.SENT)
    assert response["Location"] == f"/mail/m/{sent.pk}/"


def test_it_sends_without_delivery_confirmation_when_unticked(alice, alice_client):
    _send(alice_client, alice.address, delivery_notification="")
    raw = bytes(Message.objects.get(direction=Message.Direction.OUTBOUND).raw)
    assert b"X-DIRECT-FINAL-DESTINATION-DELIVERY" not in raw


def test_it_requires_a_recipient(alice, alice_client):
    response = _send(alice_client, alice.address, to="")
    assert response.status_code == 200
    assert "Add at least one recipient." in response.context["form"].errors["to"]
    assert not Message.objects.exists()


def test_it_rejects_a_malformed_recipient(alice, alice_client):
    response = _send(alice_client, alice.address, to="not an address")
    assert response.status_code == 200
    assert not Message.objects.exists()


def test_it_holds_a_subject_that_looks_like_phi_until_confirmed(alice, alice_client):
    response = _send(alice_client, alice.address, subject="Jones, Isabella DOB 05/01/1975")
    assert response.status_code == 200
    assert "may contain patient information" in response.content.decode()
    assert not Message.objects.exists()
    response = _send(alice_client, alice.address, subject="Jones, Isabella DOB 05/01/1975",
                     phi_confirmed="on")
    assert response.status_code == 302
    assert Message.objects.count() == 1


def test_it_warns_about_phi_while_typing_the_subject(alice, alice_client):
    response = alice_client.post("/mail/compose/subject/", {"subject": "MRN 12345678 follow-up"})
    assert b"patient information" in response.content
    response = alice_client.post("/mail/compose/subject/", {"subject": "Referral letter"})
    assert b"patient information" not in response.content


def test_it_counts_attachments_as_encoded_for_the_size_limit(alice, alice_client, settings):
    settings.HISP_MAX_MESSAGE_BYTES = 1200
    upload = SimpleUploadedFile("a.bin", b"x" * 1000, content_type="application/octet-stream")
    response = _send(alice_client, alice.address, attachments=upload)  # 1000 bytes -> ~1370
    assert response.status_code == 200
    assert "attachments" in response.context["form"].errors


def test_it_refuses_attachments_over_the_size_limit(alice, alice_client, settings):
    settings.HISP_MAX_MESSAGE_BYTES = 1000
    upload = SimpleUploadedFile("big.bin", b"x" * 2000, content_type="application/octet-stream")
    response = _send(alice_client, alice.address, attachments=upload)
    assert response.status_code == 200
    assert "limit" in " ".join(response.context["form"].errors["attachments"])
    assert not Message.objects.exists()


def test_a_read_only_delegate_cannot_send_as_the_shared_address(alice, bob):
    AddressGrantFactory(user=bob.user, address=alice.address, role=AddressGrant.Role.READ)
    response = _send(signed_in(bob), alice.address)
    assert response.status_code == 200
    assert "sender" in response.context["form"].errors
    assert not Message.objects.exists()


def test_a_read_and_send_delegate_can_send_as_the_shared_address(alice, bob):
    AddressGrantFactory(user=bob.user, address=alice.address, role=AddressGrant.Role.READ_SEND)
    assert _send(signed_in(bob), alice.address).status_code == 302
    assert Message.objects.get().envelope_from == "alice@clinic.example"


def test_outsider_cannot_send_as_another_users_address(alice, charlie_client):
    response = _send(charlie_client, alice.address)
    assert response.status_code == 200
    assert not Message.objects.exists()


def test_it_prefills_a_reply_and_reply_all(alice, alice_client):
    message = MessageFactory(sender="dr.who@partner.example",
                             to=["alice@clinic.example", "nurse@partner.example"], subject="Labs")
    entry = MailboxEntryFactory(address=alice.address, message=message)
    reply = alice_client.get(f"/mail/compose/?reply={entry.pk}&mode=reply").context["form"]
    assert reply.initial["to"] == "dr.who@partner.example"
    assert reply.initial["subject"] == "Re: Labs"
    assert "> Please see the attached." in reply.initial["body"]
    everyone = alice_client.get(f"/mail/compose/?reply={entry.pk}&mode=all").context["form"]
    assert everyone.initial["cc"] == "nurse@partner.example"


def test_it_forwards_with_the_original_attachments(alice, alice_client):
    message = MessageFactory(attachments=[("ccd.xml", "text/xml", b"<ClinicalDocument/>")])
    entry = MailboxEntryFactory(address=alice.address, message=message)
    form = alice_client.get(f"/mail/compose/?reply={entry.pk}&mode=forward").context["form"]
    assert form.initial["subject"] == "Fwd: Referral"
    response = _send(alice_client, alice.address, subject="Fwd: Referral", forward_of=entry.pk)
    assert response.status_code == 302
    raw = bytes(Message.objects.get(direction=Message.Direction.OUTBOUND).raw)
    assert b"ccd.xml" in raw


def test_outsider_gets_404_replying_to_or_forwarding_another_users_message(alice, charlie, charlie_client):
    entry = MailboxEntryFactory(address=alice.address)
    assert charlie_client.get(f"/mail/compose/?reply={entry.pk}&mode=reply").status_code == 404
    response = _send(charlie_client, charlie.address, forward_of=entry.pk)
    assert response.status_code == 404
    assert not Message.objects.filter(direction=Message.Direction.OUTBOUND).exists()


def _options(response) -> list[tuple[str, str]]:
    return re.findall(r'<option value="([^"]*)">([^<]*)</option>', response.content.decode())


def test_it_suggests_contacts_hosted_addresses_and_correspondents(alice, bob, alice_client):
    Contact.objects.create(owner=alice.user, address="dana@partner.example", name="Dana Scully")
    MailboxEntryFactory(address=alice.address, sender="Dr Quinn <quinn@medicine.example>")
    response = alice_client.get("/mail/compose/recipients/", {"field": "to", "to": "x@y.example, dan"})
    assert _options(response)[0] == ("x@y.example, dana@partner.example", "Dana Scully")
    hosted = alice_client.get("/mail/compose/recipients/", {"field": "to", "to": "bob"})
    assert ("bob@clinic.example", "Bob") in _options(hosted)
    earlier = alice_client.get("/mail/compose/recipients/", {"field": "cc", "cc": "quin"})
    assert [v for v, _ in _options(earlier)] == ["quinn@medicine.example"]


def test_autocomplete_never_suggests_another_users_correspondents(alice, charlie_client):
    MailboxEntryFactory(address=alice.address, sender="secret@partner.example")
    response = charlie_client.get("/mail/compose/recipients/", {"field": "to", "to": "secret"})
    assert response.status_code == 200
    assert _options(response) == []


def test_it_autosaves_and_updates_a_draft(alice, alice_client):
    data = {"sender": alice.address.pk, "to": "dana@", "subject": "Half", "body": "typing",
            "delivery_notification": "on"}
    response = alice_client.post("/mail/compose/draft/", data)
    draft = Draft.objects.get()
    assert f'value="{draft.pk}"'.encode() in response.content
    alice_client.post("/mail/compose/draft/", {**data, "body": "typing more", "draft": draft.pk})
    draft.refresh_from_db()
    assert draft.body == "typing more" and Draft.objects.count() == 1
    listing = alice_client.get(f"/mail/a/{alice.address.pk}/drafts/")
    assert b"Half" in listing.content
    resumed = alice_client.get(f"/mail/compose/?draft={draft.pk}").context["form"]
    assert resumed.initial["body"] == "typing more"


def test_sending_a_draft_removes_it(alice, alice_client):
    draft = Draft.objects.create(author=alice.user, address=alice.address, subject="x")
    _send(alice_client, alice.address, draft=draft.pk)
    assert not Draft.objects.exists()


def test_outsider_gets_404_for_another_users_draft(alice, charlie, charlie_client):
    draft = Draft.objects.create(author=alice.user, address=alice.address, subject="private")
    assert charlie_client.get(f"/mail/compose/?draft={draft.pk}").status_code == 404
    assert charlie_client.post(f"/mail/drafts/{draft.pk}/delete/").status_code == 404
    response = charlie_client.post("/mail/compose/draft/", {
        "sender": charlie.address.pk, "draft": draft.pk, "subject": "overwritten"})
    assert response.status_code == 404
    draft.refresh_from_db()
    assert draft.subject == "private"


def test_a_read_only_delegate_cannot_autosave_as_the_shared_address(alice, bob):
    AddressGrantFactory(user=bob.user, address=alice.address, role=AddressGrant.Role.READ)
    response = signed_in(bob).post("/mail/compose/draft/", {"sender": alice.address.pk})
    assert response.status_code == 403
    assert not Draft.objects.exists()


def test_it_discards_a_draft(alice, alice_client):
    draft = Draft.objects.create(author=alice.user, address=alice.address)
    assert alice_client.post(f"/mail/drafts/{draft.pk}/delete/").status_code == 302
    assert not Draft.objects.exists()


def _checks(response) -> dict[str, str]:
    """recipient -> "true|false" + the row's text, from the fragment's data attributes."""
    rows = re.findall(r'<li data-recipient="([^"]*)" data-ok="(true|false)">(.*?)</li>',
                      response.content.decode(), re.S)
    return {address: ok + " " + " ".join(text.split()) for address, ok, text in rows}


def test_it_shows_per_recipient_certificate_status_before_sending(db):
    add_domain("trusted.example")
    sender = add_address("sam@trusted.example", name="Sam", password="a long enough secret 1")
    add_address("dana@trusted.example", name="Dana")
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from tests.webmail.personas import Persona

    persona = Persona(user=sender.users.get(), address=sender,
                      device=TOTPDevice.objects.create(user=sender.users.get(), confirmed=True))
    client = signed_in(persona)
    response = client.post("/mail/compose/certificates/", {
        "sender": sender.pk, "to": "dana@trusted.example", "cc": "nobody@unknown.example"})
    checks = _checks(response)
    assert checks["dana@trusted.example"].startswith("true")
    assert "trusted certificate found through" in checks["dana@trusted.example"]
    assert checks["nobody@unknown.example"].startswith("false")
    assert "(no-recipient-certificate)" in checks["nobody@unknown.example"]


def test_certificate_check_reports_untrusted_recipients(alice, alice_client):
    add_domain("trusted.example")
    add_address("dana@trusted.example")
    response = alice_client.post("/mail/compose/certificates/", {
        "sender": alice.address.pk, "to": "dana@trusted.example"})
    [(address, text)] = _checks(response).items()
    assert address == "dana@trusted.example"
    assert text.startswith("false") and "(untrusted-recipient)" in text


def test_certificate_check_for_another_users_address_checks_nothing(alice, charlie_client):
    response = charlie_client.post("/mail/compose/certificates/", {
        "sender": alice.address.pk, "to": "dana@partner.example"})
    assert response.status_code == 200
    assert _checks(response) == {}
