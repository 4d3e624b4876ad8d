"""Legal but large header values (a folded Subject, sender name or Message-ID past the stored
columns' 998 characters) through the real pipeline (PostgreSQL, our agent, the openssl partner,
a real SMTP sink): each is delivered, or refused with a clear error, never a database error."""

from __future__ import annotations

import pytest

from hisp.models import Delivery, MailboxEntry, Message
from hisp.services import compose, mail
from tests.hisp.mail.drive import drain


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def _raw(world, *, message_id: str = "", sender: str = "") -> bytes:
    id_field = f"Message-ID: {message_id}\n" if message_id else ""
    return _crlf(
        f"From: {sender or world.alice.address}\nTo: {world.bob.address}\nSubject: x\n"
        f"{id_field}MIME-Version: 1.0\nContent-Type: text/plain\n\nhi\n"
    )


def test_submission_refuses_a_message_id_longer_than_a_stored_one(world):
    # Tracking finds the message again by the exact Message-ID quoted in MDNs and DSNs, so a
    # longer one is refused clearly rather than cut (or failing the INSERT).
    long_id = "<" + "a" * 1990 + "@hospital.example.org>"
    with pytest.raises(compose.SubmissionError, match="Message-ID is longer than 998"):
        compose.submit(address=world.alice.address, raw=_raw(world, message_id=long_id),
                       actor="test", peer="test")
    assert not Message.objects.exists()


def test_submission_stores_a_long_sender_display_name_cut(world):
    words = ["Dr"] * 600  # 1,799 characters, folded by the client
    folded = "\n ".join(" ".join(words[i:i + 20]) for i in range(0, len(words), 20))
    raw = _raw(world, sender=f"{folded} <{world.alice.address}>")
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    assert len(message.header_from) == 998
    [sent] = MailboxEntry.objects.filter(message=message)
    assert len(sent.sender) == 998
    drain()
    assert Delivery.objects.get(message=message).processed_at is not None


def test_long_subject_is_delivered_and_reported_on(world):
    subject = " ".join(f"w{i}" for i in range(20000))  # 128 KB, folded
    raw = compose.build_message(sender=world.alice.address, to=[world.bob.address],
                                subject=subject, body_text="hi")
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    drain()
    assert Delivery.objects.get(message=message).state == Delivery.State.DISPATCHED
    [entry] = MailboxEntry.objects.filter(address=world.bob, message__kind="regular")
    assert len(entry.subject) == 998


def test_long_message_id_from_a_partner_is_delivered_and_quoted_whole(world):
    # Inside the encryption a line may be longer than SMTP's 1,000: the stored id is cut, the
    # MDN quotes the id as written, so the partner's tracking still matches.
    long_id = "<" + "b" * 1990 + "@partner.example.net>"
    inner = world.partner.inner(to=world.alice.address, message_id=long_id)
    mail.accept_incoming(raw=world.partner.protect(inner, to=world.alice.address),
                         mail_from=world.partner.address, rcpt_tos=[world.alice.address],
                         peer="partner")
    drain()
    received = Message.objects.get(direction="in", kind="regular")
    assert received.state == Message.State.DELIVERED
    assert received.message_id == long_id[:998]
    [report] = world.sink.handler.messages
    opened = world.partner.open(report.data, our_domain="hospital.example.org")
    assert f"Original-Message-ID: {long_id}".encode() in opened


def test_submission_refuses_more_recipients_than_one_transaction_takes(world):
    """Webmail and the CLI take recipients from the headers: thousands there would each cost
    a certificate discovery and a delivery, holding a worker for many minutes."""
    many = [f"doc{i}@partner.example.net" for i in range(compose.MAX_RECIPIENTS + 1)]
    raw = compose.build_message(sender=world.alice.address, to=many, subject="Hi",
                                body_text="Hello")
    with pytest.raises(compose.SubmissionError, match="at most 100 recipients"):
        compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    assert not Message.objects.exists()
    raw = compose.build_message(sender=world.alice.address, to=many[:-1], subject="Hi",
                                body_text="Hello")
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    assert message.deliveries.count() == compose.MAX_RECIPIENTS


def test_a_hundred_recipients_at_one_partner_leave_in_one_transaction(world):
    """The most one message may have (MAX_RECIPIENTS), all at one partner domain: protected
    once, sent in one SMTP transaction (egress takes the companions along), each delivery
    recorded as sent, and the message log lists them all."""
    import json
    from io import StringIO

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from django.core.management import call_command

    from hisp.services import pki
    from tests.hisp.mail.partner import leaf_certificate

    partner = world.partner
    partner_domain = partner.address.rpartition("@")[2]
    # The partner publishes a domain-bound certificate: it covers every address there.
    domain_cert = leaf_certificate(partner.ca, partner.ca_key, partner.key, partner_domain,
                                   names=[x509.DNSName(partner_domain)])
    pki.import_certificate(domain_cert.public_bytes(serialization.Encoding.PEM))
    many = [f"doc{i}@{partner_domain}" for i in range(compose.MAX_RECIPIENTS)]
    raw = compose.build_message(sender=world.alice.address, to=many, subject="To all",
                                body_text="Hello all")
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    drain()
    states = set(Delivery.objects.filter(message=message).values_list("state", flat=True))
    assert states == {Delivery.State.SENT}
    [received] = world.sink.handler.messages
    assert sorted(received.rcpt_tos) == sorted(many)
    out = StringIO()
    call_command("messages", "--json", "--direction", "out", stdout=out)
    [row] = [m for m in json.loads(out.getvalue()) if m["subject"] == "To all"]
    assert len(row["deliveries"]) == compose.MAX_RECIPIENTS
