"""Building and submitting new messages."""

from __future__ import annotations

import email
import email.policy

import pytest

from hisp import mailtext
from hisp.models import Message
from hisp.services import compose


def test_built_message_has_a_unique_message_id_on_our_hostname(settings):
    settings.HISP_HOSTNAME = "hisp.example.org"
    one = compose.build_message(sender="alice@hospital.example.org", to=["b@x.org"],
                                subject="s", body_text="hi")
    two = compose.build_message(sender="alice@hospital.example.org", to=["b@x.org"],
                                subject="s", body_text="hi")
    ids = [email.message_from_bytes(m, policy=email.policy.default)["Message-ID"]
           for m in (one, two)]
    assert ids[0] != ids[1]
    assert all(i.endswith("@hisp.example.org>") for i in ids)
    assert b"\r\n" in one and b"\n" not in one.replace(b"\r\n", b"")


def test_delivery_notification_asks_for_final_destination_delivery():
    raw = compose.build_message(sender="a@h.org", to=["b@x.org"], subject="s", body_text="hi")
    assert mailtext.wants_final_delivery(raw)
    plain = compose.build_message(sender="a@h.org", to=["b@x.org"], subject="s", body_text="hi",
                                  delivery_notification=False)
    assert not mailtext.wants_final_delivery(plain)


def test_attachments_are_listed():
    raw = compose.build_message(sender="a@h.org", to=["b@x.org"], cc=["c@x.org"], subject="s",
                                body_text="hi", attachments=[("r.pdf", "application/pdf", b"%PDF")])
    summary = mailtext.summarise(raw)
    assert summary.cc == ("c@x.org",)
    assert summary.attachments == (mailtext.Attachment("r.pdf", "application/pdf", 4),)


def test_submit_refuses_an_address_not_hosted_here(transactional_db):
    raw = compose.build_message(sender="a@elsewhere.org", to=["b@x.org"], subject="s",
                                body_text="hi")
    with pytest.raises(compose.SubmissionError):
        compose.submit(address="a@elsewhere.org", raw=raw, actor="test", peer="test")


def test_submit_refuses_a_reused_message_id(alice):
    raw = compose.build_message(sender=alice.address, to=["b@x.org"], subject="s", body_text="hi")
    first = compose.submit(address=alice.address, raw=raw, actor="test", peer="test")
    with pytest.raises(compose.SubmissionError, match="already"):
        compose.submit(address=alice.address, raw=raw.replace(b"hi", b"ho"), actor="test",
                       peer="test")
    # The very same message again is a client's retry: answered with the stored one.
    assert compose.submit(address=alice.address, raw=raw, actor="test", peer="test") == first
    assert Message.objects.count() == 1


def test_submit_adds_message_id_and_date_when_missing(alice):
    raw = f"From: {alice.address}\r\nTo: b@x.org\r\nSubject: s\r\n\r\nhi\r\n".encode()
    message = compose.submit(address=alice.address, raw=raw, actor="test", peer="test")
    stored = bytes(message.raw)
    assert stored.startswith(b"Message-ID: <")
    assert b"\r\nDate: " in stored
    assert message.message_id in stored.decode()


def test_one_delivery_per_mailbox_however_often_it_is_named(alice):
    raw = compose.build_message(sender=alice.address, to=["b@x.org", "B@x.org"],
                                cc=["b@X.ORG", "c@x.org"], subject="s", body_text="hi")
    message = compose.submit(address=alice.address, raw=raw, actor="test", peer="test")
    # Tracking matches a partner's MDNs ignoring case, so B@ and b@ are one recipient (a second
    # delivery would time out for want of an MDN the first one took); the first spelling is kept.
    assert message.envelope_to == ["b@x.org", "c@x.org"]
    assert sorted(message.deliveries.values_list("recipient", flat=True)) == ["b@x.org", "c@x.org"]


def test_a_hosted_mailbox_named_in_two_cases_is_one_delivery(alice):
    # Hosted addresses are found ignoring case, so these are one mailbox: one delivery.
    local, _, domain = alice.address.partition("@")
    raw = compose.build_message(sender=alice.address, to=[f"bob@{domain}", f"BOB@{domain}"],
                                subject="s", body_text="hi")
    message = compose.submit(address=alice.address, raw=raw, actor="test", peer="test")
    assert message.envelope_to == [f"bob@{domain}"]


def test_two_outbound_messages_can_never_share_a_message_id(db):
    # compose checks first; the database constraint closes the race between two submissions.
    from django.db import IntegrityError, transaction

    from hisp.models import Message

    def stored(message_id: str, direction: str = Message.Direction.OUTBOUND) -> Message:
        return Message.objects.create(direction=direction, state=Message.State.QUEUED,
                                      raw=b"x", message_id=message_id)

    stored("<same@hospital.example.org>")
    with pytest.raises(IntegrityError), transaction.atomic():
        stored("<same@hospital.example.org>")
    # Inbound copies (our own hosted mail comes back in) and unnamed rows are not concerned.
    stored("<same@hospital.example.org>", Message.Direction.INBOUND)
    stored("")
    stored("")
