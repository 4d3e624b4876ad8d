"""The partner's server drops the connection after DATA's final dot, before its reply: the
window where a message may have been taken although we were never told (RFC 1047). We cannot
know which, so we choose a possible duplicate over a possible loss: the attempt is a temporary
failure, the delivery is retried as usual, and the retry sends the very same bytes (same
Message-ID), so the receiving side can recognise the copy. docs/mail-flow.md says so."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from hisp.models import Delivery, Route
from hisp.services import mail, outbound
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER
from tests.hisp.mail.test_outbound import _alice_dsns, _delivery, _send
from tests.support.services import free_port

pytestmark = pytest.mark.usefixtures("no_idle_egress_sessions")


@dataclass
class HangsUpAfterTheDot:
    """Takes the whole message, then closes the connection without a reply, ``drops`` times;
    after that it answers 250 like any server."""

    drops: int = 1
    received: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received.append(envelope.original_content)
        if self.drops:
            self.drops -= 1
            server.transport.abort()  # at once: the reply below is never written
        return "250 2.0.0 OK"


@contextmanager
def partner_server(handler: HangsUpAfterTheDot) -> Iterator[None]:
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        Route.objects.filter(domain=PARTNER).update(host="127.0.0.1", port=controller.port)
        yield
    finally:
        controller.stop()


def test_a_hang_up_after_the_final_dot_is_retried_with_the_same_bytes_not_lost(world):
    handler = HangsUpAfterTheDot()
    with partner_server(handler):
        message = _send(world, to=[world.partner.address])
        drain()
        delivery = _delivery(message, world.partner.address)
        assert delivery.state == Delivery.State.DEFERRED  # not sent, not failed
        assert delivery.attempts == 1
        assert "SMTPServerDisconnected" in delivery.detail
        assert len(handler.received) == 1
        # The retry, when it falls due, goes out and is recorded as sent.
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        assert mail.sweep()["deliveries"] == 1
        assert outbound.deliver(delivery.pk) == "sent"  # the task the sweeper queued
        delivery.refresh_from_db()
    assert delivery.state == Delivery.State.SENT
    assert delivery.attempts == 2
    first, second = handler.received
    assert first == second  # the same protected bytes, so the same Message-ID inside
    assert _alice_dsns(world) == []  # nothing to report: it was delivered
    assert outbound.deliver(delivery.pk) == "not-claimed"  # and it is never sent a third time
