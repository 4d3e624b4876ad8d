"""What the sender sees of egress refusals that need no retry: a partner publishing a null MX
(RFC 7505) and a partner whose SIZE is below the message (RFC 1870) each fail the delivery on
its first attempt with exactly one DSN carrying the right status, and nothing is uploaded."""

from __future__ import annotations

import pytest
from aiosmtpd.controller import Controller

from hisp import dsn
from hisp.models import Delivery, MailboxEntry, Message, Route
from hisp.services import compose
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, SinkHandler
from tests.support.bind import Record, bind_server
from tests.support.services import free_port

pytestmark = pytest.mark.usefixtures("no_idle_egress_sessions")


def _send(world) -> Delivery:
    raw = compose.build_message(
        sender=world.alice.address, to=[world.partner.address], subject="Referral",
        body_text="Please see the patient.", attachments=[("a.txt", "text/plain", b"x" * 4000)],
    )
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    drain()
    return Delivery.objects.get(message=message, recipient=world.partner.address)


def _send_to_partner_server(world, handler, **options) -> Delivery:
    """One message to the partner, whose route points at an aiosmtpd server with ``options``."""
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        Route.objects.filter(domain=PARTNER).update(port=controller.port)
        return _send(world)
    finally:
        controller.stop()


def _alice_dsns(world) -> list[dsn.Dsn]:
    entries = MailboxEntry.objects.filter(address=world.alice, message__kind=Message.Kind.DSN)
    return [dsn.parse(bytes(e.message.raw)) for e in entries]


def test_null_mx_fails_the_delivery_at_once_with_one_dsn(world, settings):
    Route.objects.filter(domain=PARTNER).update(host="", port=25)  # its MX records decide
    with bind_server({PARTNER: [Record("@", "MX", "0 .")]}) as server:
        settings.HISP_DNS_SERVERS = [server.address]
        delivery = _send(world)
    assert (delivery.state, delivery.attempts) == (Delivery.State.FAILED, 1)
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.1.10"


def test_message_over_the_partners_size_limit_fails_at_once_with_one_dsn(world):
    handler = SinkHandler()
    delivery = _send_to_partner_server(world, handler, data_size_limit=1000)
    assert (delivery.state, delivery.attempts) == (Delivery.State.FAILED, 1)
    assert "limit of 1000 bytes" in delivery.detail
    assert handler.messages == []
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.3.4"


def test_a_refusal_in_non_ascii_with_control_characters_fails_once_with_one_dsn(world):
    handler = SinkHandler(reply="550 5.7.1 Empf\u00e4nger abgelehnt \x1b[31m")
    delivery = _send_to_partner_server(world, handler, enable_SMTPUTF8=True)
    assert (delivery.state, delivery.attempts) == (Delivery.State.FAILED, 1)
    assert "\x1b" not in delivery.detail and "Empf\u00e4nger" in delivery.detail
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.7.1"
    assert "\x1b" not in report.recipients[0].diagnostic


def test_mx_aiming_at_internal_addresses_fails_at_once_as_this_hisps_decision(world, settings):
    Route.objects.filter(domain=PARTNER).update(host="", port=25)  # its MX records decide
    zone = [Record("@", "MX", f"10 mx.{PARTNER}."), Record("mx", "A", "169.254.169.254")]
    with bind_server({PARTNER: zone}) as server:
        settings.HISP_DNS_SERVERS = [server.address]
        delivery = _send(world)
    assert (delivery.state, delivery.attempts) == (Delivery.State.FAILED, 1)
    [report] = _alice_dsns(world)
    assert report.recipients[0].status == "5.4.4"
    [entry] = MailboxEntry.objects.filter(address=world.alice, message__kind=Message.Kind.DSN)
    text = " ".join(entry.body_text.split())
    assert "only internal addresses" in text and "the destination refused it" not in text
