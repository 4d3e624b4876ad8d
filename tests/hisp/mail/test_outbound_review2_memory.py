"""Outbound review: protecting a large message for many destination domains holds one
protected copy at a time, not one per domain (a 25 MB message to a hundred domains would
otherwise hold 2.5 GB in the worker), and sending one copy to many recipients of a domain
holds that copy once."""

from __future__ import annotations

import tracemalloc

from cryptography.hazmat.primitives import serialization

from hisp.models import Delivery, Message
from hisp.services import compose, outbound, pki
from tests.hisp.mail.partner import PARTNER, leaf_certificate

ATTACHMENT = 2 * 1024 * 1024
DOMAINS = 6


def _recipients(world, count: int) -> list[str]:
    """``count`` partner addresses, each at a domain of its own, and a second one at the
    first domain, certified by the partner's CA (which alice's domain trusts)."""
    partner = world.partner
    addresses = [f"doc@site{i}.example.net" for i in range(count)] + ["nurse@site0.example.net"]
    for address in addresses:
        cert = leaf_certificate(partner.ca, partner.ca_key, partner.key, address)
        pki.import_certificate(cert.public_bytes(serialization.Encoding.PEM))
    return addresses


def _peak_of_processing(world, to: list[str]) -> tuple[int, int]:
    """(peak bytes allocated while the message is protected, size of one protected copy)."""
    raw = compose.build_message(
        sender=world.alice.address,
        to=to,
        subject="Imaging",
        body_text="Images attached.",
        attachments=[("scan.bin", "application/octet-stream", b"\x5a" * ATTACHMENT)],
        delivery_notification=False,
    )
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    del raw
    tracemalloc.start()
    try:
        outcome = outbound.process(message.pk)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.startswith("protected:")
    message.refresh_from_db()
    assert message.state == Message.State.SENT
    wires = [
        bytes(w) for w in Delivery.objects.filter(message=message).values_list("wire", flat=True)
    ]
    assert len(wires) == len(to) and all(wires)
    return peak, len(wires[0])


def test_protecting_for_many_domains_holds_one_copy_at_a_time(world):
    *doctors, nurse = _recipients(world, DOMAINS)
    # Two recipients, so that the copy is queued for delivery here too, not sent in this task.
    single, wire = _peak_of_processing(world, [doctors[0], nurse])
    many, _wire = _peak_of_processing(world, doctors)
    # Holding each domain's copy to the end would add (DOMAINS - 1) copies to the peak.
    assert many < single + 2 * wire, (single, many, wire)


def _partner_recipients(world, count: int) -> list[str]:
    """``count`` addresses at the partner's domain, each with its own certificate."""
    partner = world.partner
    addresses = [partner.address] + [f"nurse{i}@{PARTNER}" for i in range(1, count)]
    for address in addresses[1:]:
        cert = leaf_certificate(partner.ca, partner.ca_key, partner.key, address)
        pki.import_certificate(cert.public_bytes(serialization.Encoding.PEM))
    return addresses


def _peak_of_sending(world, to: list[str]) -> tuple[int, int]:
    """(peak bytes allocated while one SMTP transaction takes the copy to all of ``to``,
    size of the copy)."""
    raw = compose.build_message(
        sender=world.alice.address,
        to=to,
        subject="Imaging",
        body_text="Images attached.",
        attachments=[("scan.bin", "application/octet-stream", b"\x5a" * ATTACHMENT)],
        delivery_notification=False,
    )
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    del raw
    assert outbound.process(message.pk).startswith("protected:")
    first = message.deliveries.order_by("pk").first()
    world.sink.handler.messages.clear()
    tracemalloc.start()
    try:
        assert outbound.deliver(first.pk) == "sent"
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [received] = world.sink.handler.messages
    assert sorted(received.rcpt_tos) == sorted(to)
    assert set(message.deliveries.values_list("state", flat=True)) == {Delivery.State.SENT}
    return peak, len(received.data)


def test_sending_one_copy_to_many_recipients_holds_it_once(world):
    # Each companion was loaded whole, with its own copy and the message's bytes, and kept
    # until the transaction was over: a hundred companions of a 25 MB message, 4 GB.
    addresses = _partner_recipients(world, 6)
    two, wire = _peak_of_sending(world, addresses[:2])
    six, _wire = _peak_of_sending(world, addresses)
    assert six < two + wire, (two, six, wire)
