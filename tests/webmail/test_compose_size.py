"""The compose page tells the clinician how much they may attach, and refuses at once a message
that would not fit HISP_MAX_MESSAGE_BYTES once signed and encrypted (a partner HISP with the
same limit would refuse it, and the failure notice would come much later)."""

from __future__ import annotations

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from hisp.models import Message
from hisp.services import compose
from tests.factories import MailboxEntryFactory, MessageFactory
from webmail.forms import attachment_allowance

LIMIT = 2 * 1024 * 1024
KB, MB = 1024, 1024 * 1024


@pytest.fixture
def small_limit(settings):
    settings.HISP_MAX_MESSAGE_BYTES = LIMIT


def _send(client, sender, **fields):
    data = {"sender": sender.pk, "to": "dana@partner.example", "cc": "", "subject": "Imaging",
            "body": "Please see the attached scan.", "delivery_notification": "on"}
    data.update(fields)
    return client.post("/mail/compose/", data)


def _scan(size: int) -> SimpleUploadedFile:
    return SimpleUploadedFile("scan.pdf", os.urandom(size), content_type="application/pdf")


def test_the_page_states_the_real_attachment_allowance(alice_client):
    # 25 MB protected leaves about 18.3 MB of message, and its attachments are base64 inside it.
    page = alice_client.get("/mail/compose/").content.decode()
    assert "Attachments up to about 13.3 MB in total." in page
    assert "25 MB limit for secure messages" in page
    assert 'aria-describedby="id_attachments_helptext"' in page
    assert 'id="id_attachments_helptext"' in page


def test_the_page_states_the_allowance_of_a_smaller_limit(alice_client, small_limit):
    page = alice_client.get("/mail/compose/").content.decode()
    assert "Attachments up to about 1 MB in total." in page
    assert "2 MB limit for secure messages" in page


def test_attachments_that_fit_as_plaintext_but_not_once_protected_are_refused(
    alice, alice_client, small_limit
):
    # 1.3 MB encodes to 1.8 MB in the message: under the limit as it stands, 2.4 MB protected.
    response = _send(alice_client, alice.address, attachments=_scan(1300 * KB))
    assert response.status_code == 200
    [error] = response.context["form"].errors["attachments"]
    assert "over the 2 MB limit for secure messages" in error
    assert "Attachments up to about 1 MB in total fit" in error
    page = response.content.decode()
    assert "The message is too large to send" in page
    assert "Attachments up to about 1 MB in total." in page
    assert not Message.objects.exists()


def test_attachments_up_to_the_allowance_are_sent(alice, alice_client, small_limit):
    allowance = attachment_allowance()
    assert 1 * MB < allowance < 1.1 * MB
    response = _send(alice_client, alice.address, attachments=_scan(allowance))
    assert response.status_code == 302
    raw = bytes(Message.objects.get().raw)
    assert compose.protected_size(len(raw), certificates=2) <= LIMIT


def test_each_recipient_at_one_domain_needs_room(alice, alice_client, small_limit):
    """Every recipient certificate adds a RecipientInfo to the one envelope for its domain."""
    many = ", ".join(f"doc{i}@partner.example" for i in range(100))
    response = _send(alice_client, alice.address, to=many,
                     attachments=_scan(attachment_allowance()))
    assert response.status_code == 200
    [error] = response.context["form"].errors["attachments"]
    assert "over the 2 MB limit" in error
    assert "Attachments up to about 922 KB in total fit in this message" in error  # not 1 MB
    assert not Message.objects.exists()


def test_forwarded_attachments_that_do_not_fit_are_refused_clearly(
    alice, alice_client, small_limit
):
    # The form cannot see forwarded attachments; submit() refuses, and the page says why.
    message = MessageFactory(attachments=[("ct.dcm", "application/dicom", os.urandom(1300 * KB))])
    entry = MailboxEntryFactory(address=alice.address, message=message)
    response = _send(alice_client, alice.address, subject="Fwd: Referral", forward_of=entry.pk)
    assert response.status_code == 200
    page = response.content.decode()
    assert "The message could not be sent: the message is too large" in page
    assert "over the 2 MB limit" in page
    assert Message.objects.filter(direction=Message.Direction.OUTBOUND).count() == 0
