"""Outbound review: a Bcc recipient is never visible to the other recipients, not in a header
and not in the encrypted envelope (its RecipientInfo names the Bcc recipient's certificate,
which the partner publishes: anyone able to read the envelope could tell who else got it)."""

from __future__ import annotations

import pytest

from hisp.models import Delivery
from hisp.services import compose
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, Partner, crlf


@pytest.fixture
def nurse(world, tmp_path) -> Partner:
    nurse = Partner.create(tmp_path / "nurse", slot="nurse", address=f"nurse@{PARTNER}")
    nurse.exchange_with(HOSTED)
    return nurse


def _raw(world, *, bcc: str) -> bytes:
    return crlf(
        (
            f"From: {world.alice.address}\nTo: {world.partner.address}\nBcc: {bcc}\n"
            "Subject: Referral\nMIME-Version: 1.0\nContent-Type: text/plain\n\n"
            "Please see the patient.\n"
        ).encode()
    )


def _copies(world) -> dict[str, bytes]:
    copies: dict[str, bytes] = {}
    for received in world.sink.handler.messages:
        for rcpt in received.rcpt_tos:
            assert rcpt not in copies
            copies[rcpt] = received.data
    return copies


def _assert_apart(world, nurse: Partner) -> None:
    doc = world.partner
    copies = _copies(world)
    assert set(copies) == {doc.address, nurse.address}
    # Each copy opens for its own recipient and for no one else.
    assert b"Please see the patient." in doc.open(copies[doc.address], our_domain=HOSTED)
    assert b"Please see the patient." in nurse.open(copies[nurse.address], our_domain=HOSTED)
    with pytest.raises(AssertionError, match="decrypt"):
        nurse.open(copies[doc.address], our_domain=HOSTED)
    assert b"nurse" not in doc.open(copies[doc.address], our_domain=HOSTED)
    assert b"Bcc" not in nurse.open(copies[nurse.address], our_domain=HOSTED)
    # Separate transactions: the To recipient's is not also addressed to the Bcc one.
    assert sorted(r.rcpt_tos for r in world.sink.handler.messages) == [
        [doc.address],
        [nurse.address],
    ]


def test_a_bcc_recipient_of_the_same_domain_gets_a_copy_of_its_own(world, nurse):
    message = compose.submit(
        address=world.alice.address, raw=_raw(world, bcc=nurse.address), actor="test", peer="test"
    )
    drain()
    assert set(message.deliveries.values_list("state", flat=True)) == {Delivery.State.SENT}
    _assert_apart(world, nurse)


def test_an_envelope_only_recipient_of_the_same_domain_gets_a_copy_of_its_own(world, nurse):
    # The submission port: the Bcc recipient is in the envelope only, the header is gone.
    raw = _raw(world, bcc=nurse.address).replace(f"Bcc: {nurse.address}\r\n".encode(), b"")
    message = compose.submit(
        address=world.alice.address,
        raw=raw,
        actor="test",
        peer="test",
        recipients=[world.partner.address, nurse.address],
    )
    drain()
    assert set(message.deliveries.values_list("state", flat=True)) == {Delivery.State.SENT}
    _assert_apart(world, nurse)


def test_recipients_named_in_the_header_still_share_one_copy(world, nurse):
    raw = compose.build_message(
        sender=world.alice.address,
        to=[world.partner.address],
        cc=[nurse.address.upper().replace(PARTNER.upper(), PARTNER)],
        subject="Referral",
        body_text="Please see the patient.",
    )
    compose.submit(
        address=world.alice.address,
        raw=raw,
        actor="test",
        peer="test",
        recipients=[world.partner.address, nurse.address],
    )
    drain()
    [received] = world.sink.handler.messages
    assert sorted(received.rcpt_tos) == sorted([world.partner.address, nurse.address])


def test_no_blind_field_in_any_spelling_is_stored_or_sent(alice):
    # RFC 5322 3.6.3 and 3.6.6: Bcc and Resent-Bcc name recipients the others must not see.
    raw = crlf(
        (
            f"From: {alice.address}\nTo: doc@partner.example.net\nBCC: secret@partner.example.net\n"
            "Resent-Bcc: other@partner.example.net\nbcc:\n  folded@partner.example.net\n"
            "Subject: Referral\n\nPlease see the patient.\n"
        ).encode()
    )
    message = compose.submit(
        address=alice.address,
        raw=raw,
        actor="test",
        peer="test",
        recipients=["doc@partner.example.net"],
    )
    stored = bytes(message.raw)
    assert b"secret" not in stored
    assert b"other@" not in stored
    assert b"folded" not in stored
    assert b"Please see the patient." in stored
