"""Outbound review 3: a message sent in several encrypted copies (its To recipients' and one
per Bcc recipient) is signed once, not once per copy, and each copy still opens only for its
own recipients."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import agent.cms
from hisp.models import Delivery, Message
from hisp.services import compose, outbound
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.partner import PARTNER, Partner, crlf, openssl


@pytest.fixture
def readers(world, tmp_path) -> list[Partner]:
    """The partner's doctor (To) and two nurses (Bcc), each with a certificate of their own."""
    nurses = [
        Partner.create(tmp_path / name, slot=name, address=f"{name}@{PARTNER}")
        for name in ("nurse", "nurse2")
    ]
    for nurse in nurses:
        nurse.exchange_with(HOSTED)
    return [world.partner, *nurses]


@pytest.fixture
def signatures(monkeypatch) -> list[int]:
    """Counts the agent's CMS signatures; each still made by the real function."""
    made: list[int] = []
    real: Callable[..., bytes] = agent.cms.sign

    def counted(*args: object, **kwargs: object) -> bytes:
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(agent.cms, "sign", counted)
    return made


def _queued(world, readers: list[Partner]) -> Message:
    doc, *nurses = readers
    raw = crlf(
        (
            f"From: {world.alice.address}\nTo: {doc.address}\n"
            f"Bcc: {', '.join(n.address for n in nurses)}\n"
            "Subject: Referral\nMIME-Version: 1.0\nContent-Type: text/plain\n\n"
            "Please see the patient.\n"
        ).encode()
    )
    return compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")


def test_a_message_in_three_copies_is_signed_once(world, readers, signatures):
    message = _queued(world, readers)
    assert outbound.process(message.pk) == "protected:3/3"
    assert len(signatures) == 1


def test_each_copy_opens_only_for_its_recipient_and_all_carry_the_same_signed_entity(
    world, readers, signatures
):
    message = _queued(world, readers)
    outbound.process(message.pk)
    wires = {
        d.recipient: bytes(d.wire)
        for d in Delivery.objects.filter(message=message, wire__isnull=False)
    }
    assert set(wires) == {r.address for r in readers}
    assert len(set(wires.values())) == len(readers)  # a copy each
    entities = []
    for reader in readers:
        wire = wires[reader.address]
        assert b"Please see the patient." in reader.open(wire, our_domain=HOSTED)
        for other in readers:
            if other is not reader:
                with pytest.raises(AssertionError, match="decrypt"):
                    other.open(wire, our_domain=HOSTED)
        entities.append(
            openssl("-decrypt", "-recip", reader.cert_file, "-inkey", reader.key_file, data=wire)
        )
    # One multipart/signed entity (its random boundary and its signature) in every copy.
    assert len(set(entities)) == 1
