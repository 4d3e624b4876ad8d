"""Outbound review: the per-domain pending-certificate hold. A held delivery follows the route
as it is now (a hold turned off, or the route deleted, fails it at its next re-check, as the
console's confirmation says); a re-check that meets a passing trouble (the certificate's CRL
out of reach) keeps holding it; a released delivery gets the whole SMTP retry period."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from django.utils import timezone

from hisp import dsn
from hisp.models import Delivery, MailboxEntry, Message, Route
from hisp.services import compose, outbound, pki, routes
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, leaf_certificate

NURSE = f"nurse@{PARTNER}"


def _alice_dsns(world) -> list[dsn.Dsn]:
    entries = MailboxEntry.objects.filter(
        address=world.alice, message__kind=Message.Kind.DSN
    ).order_by("id")
    return [dsn.parse(bytes(e.message.raw)) for e in entries]


@pytest.fixture
def held(world) -> Delivery:
    """A delivery to the partner's nurse (no certificate anywhere) held by the route."""
    Route.objects.filter(domain=PARTNER).update(hold_pending_certificate=True)
    raw = compose.build_message(
        sender=world.alice.address,
        to=[NURSE],
        subject="Referral",
        body_text="Please see the patient.",
        delivery_notification=False,
    )
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    drain()
    delivery = Delivery.objects.get(message=message)
    assert delivery.state == Delivery.State.PENDING_CERTIFICATE
    assert [d.recipients[0].action for d in _alice_dsns(world)] == ["delayed"]
    return delivery


def _nurse_certificate(world, *, crl_url: str | None = None) -> None:
    partner = world.partner
    cert = leaf_certificate(partner.ca, partner.ca_key, partner.key, NURSE, crl_url=crl_url)
    pki.import_certificate(cert.public_bytes(serialization.Encoding.PEM))


def test_a_hold_turned_off_fails_the_held_delivery_at_its_next_recheck(world, held):
    route = Route.objects.get(domain=PARTNER)
    routes.change_route(
        PARTNER,
        route.target,
        expected=routes.state(route),
        require_tls=False,
        hold_pending_certificate=False,
        actor="test",
    )
    assert outbound.deliver(held.pk) == "failed"
    held.refresh_from_db()
    assert (held.state, held.detail) == (Delivery.State.FAILED, "no-recipient-certificate")
    failed = _alice_dsns(world)[1:]
    assert [(d.recipients[0].action, d.recipients[0].status) for d in failed] == [
        ("failed", "5.7.31")
    ]
    assert outbound.deliver(held.pk) == "not-claimed"
    assert len(_alice_dsns(world)) == 2


def test_a_deleted_route_fails_the_held_delivery_at_its_next_recheck(world, held):
    routes.delete_route(PARTNER, actor="test")
    assert outbound.deliver(held.pk) == "failed"
    assert [d.recipients[0].action for d in _alice_dsns(world)] == ["delayed", "failed"]


def test_a_certificate_found_after_the_hold_was_turned_off_is_still_used(world, held):
    Route.objects.filter(domain=PARTNER).update(hold_pending_certificate=False)
    _nurse_certificate(world)
    assert outbound.deliver(held.pk) == "released"
    drain()
    held.refresh_from_db()
    assert held.state == Delivery.State.SENT
    assert [r.rcpt_tos for r in world.sink.handler.messages] == [[NURSE]]


def _closed_port_url(path: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def test_a_recheck_that_cannot_reach_the_certificates_crl_keeps_holding(world, held, settings):
    settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS = True  # the CRL URL is on loopback
    _nurse_certificate(world, crl_url=_closed_port_url("/partner.crl"))
    assert outbound.deliver(held.pk) == "still-pending"
    held.refresh_from_db()
    assert held.state == Delivery.State.PENDING_CERTIFICATE
    assert held.next_attempt_at > timezone.now()
    assert len(_alice_dsns(world)) == 1
    # Once the hold is over it fails, once, as the time-out it is.
    Delivery.objects.filter(pk=held.pk).update(
        first_attempt_at=timezone.now() - settings.HISP_PENDING_CERTIFICATE_HOLD
    )
    assert outbound.deliver(held.pk) == "failed"
    [_pending, failed] = _alice_dsns(world)
    assert (failed.recipients[0].action, failed.recipients[0].status) == ("failed", "5.4.7")


def test_a_released_delivery_gets_the_whole_retry_period_for_smtp(world, held, settings):
    settings.HISP_PENDING_CERTIFICATE_HOLD = timedelta(days=5)
    # Held for four days, longer than HISP_RETRY_PERIOD (3 days), then the certificate came.
    Delivery.objects.filter(pk=held.pk).update(first_attempt_at=timezone.now() - timedelta(days=4))
    _nurse_certificate(world)
    world.sink.handler.reply = "451 4.3.0 try again later"
    assert outbound.deliver(held.pk) == "released"
    drain()
    held.refresh_from_db()
    # One refusal for now is retried, not taken for three days of them.
    assert held.state == Delivery.State.DEFERRED
    assert len(_alice_dsns(world)) == 1


def test_a_discovery_that_cannot_finish_holds_at_once_and_tells_the_sender(world, settings):
    # Discovery not answering (a DNS server that reads nothing) is what the hold is for: the
    # sender hears at once, and the hold, not three days of silent retries, bounds the wait.
    Route.objects.filter(domain=PARTNER).update(hold_pending_certificate=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        settings.HISP_DNS_SERVERS = [f"127.0.0.1:{silent.getsockname()[1]}"]
        settings.HISP_DISCOVERY_TIMEOUT = timedelta(seconds=1)
        raw = compose.build_message(
            sender=world.alice.address,
            to=[NURSE],
            subject="Referral",
            body_text="Please see the patient.",
            delivery_notification=False,
        )
        message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
        assert outbound.process(message.pk).startswith("protected:")
    delivery = Delivery.objects.get(message=message)
    assert (delivery.state, delivery.detail) == (
        Delivery.State.PENDING_CERTIFICATE,
        "no-recipient-certificate",
    )
    assert [(d.recipients[0].action, d.recipients[0].status) for d in _alice_dsns(world)] == [
        ("delayed", "4.7.31")
    ]


def test_deleting_a_route_records_the_hold_it_ends(world):
    # Deleting a holding route fails its held deliveries at their next re-check: the log says
    # what was dropped, as it does for a STARTTLS requirement.
    from hisp.models import AuditEvent

    Route.objects.filter(domain=PARTNER).update(hold_pending_certificate=True)
    routes.delete_route(PARTNER, actor="test")
    event = AuditEvent.objects.get(action="route.delete")
    assert event.detail["hold_pending_certificate"] is True
