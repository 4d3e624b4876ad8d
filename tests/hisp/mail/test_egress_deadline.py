"""One egress attempt ends by a deadline inside the claim lease (half of HISP_CLAIM_LEASE): past
the lease the sweeper hands the delivery to another worker, and an attempt still talking to the
remote would then deliver the message twice. Real servers on loopback that stall at each step:
one that never greets, an aiosmtpd that sits on the DATA reply, one that stops reading the
message after its 354, and a DNS server that never answers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import dns.exception
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from hisp import egress
from hisp.services import routes
from tests.support.services import free_port

pytestmark = pytest.mark.usefixtures("no_idle_egress_sessions")

LEASE = 4.0  # seconds; the attempt's deadline is half of it
SLOW = 6.0  # a per-command timeout longer than the lease, as the 60 s default is
WIRE = b"From: alice@hospital.example.org\r\nSubject: x\r\n\r\nbody\r\n"
PARTNER = "partner.example.net"
RECIPIENT = f"doc@{PARTNER}"
T = TypeVar("T")


@pytest.fixture(autouse=True)
def short_lease(settings) -> None:
    settings.HISP_CLAIM_LEASE = timedelta(seconds=LEASE)


@dataclass
class Partner:
    """Counts connections and keeps what it accepted; ``data_delay`` holds the DATA reply."""

    data_delay: float = 0.0
    connections: int = 0
    delivered: list[bytes] = field(default_factory=list)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.connections += 1
        return responses

    async def handle_DATA(self, server, session, envelope) -> str:
        await asyncio.sleep(self.data_delay)  # cancelled when the client hangs up
        self.delivered.append(envelope.original_content)
        return "250 2.0.0 OK"


class StopsReadingAfter354(SMTP):
    """Says 354 to DATA and then reads nothing more: the client's writes fill the socket
    buffers and block, as on a stalled link."""

    async def smtp_DATA(self, arg: str) -> None:
        self.transport.pause_reading()
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        await asyncio.sleep(3600)  # cancelled when the client hangs up or the server stops


class StallingController(Controller):
    def factory(self) -> SMTP:
        return StopsReadingAfter354(self.handler, **self.SMTP_kwargs)


@contextmanager
def partner(
    controller_class: type[Controller] = Controller, **script
) -> Iterator[tuple[Partner, egress.Hop]]:
    handler = Partner(**script)
    controller = controller_class(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, egress.Hop("127.0.0.1", controller.port)
    finally:
        controller.stop()


@contextmanager
def silent_server() -> Iterator[egress.Hop]:
    """Listens and never says a word: the kernel completes the connection, nobody greets (a
    hung or overloaded MTA)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield egress.Hop("127.0.0.1", listener.getsockname()[1])


def timed(call: Callable[[], T]) -> tuple[T, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def send_via(hops: list[egress.Hop], wire: bytes = WIRE) -> egress.Outcome:
    return egress.send_via(
        hops, wire=wire, mail_from="a@b.test", recipients=[RECIPIENT], timeout=SLOW
    )[RECIPIENT]


def assert_cut_short(outcome: egress.Outcome, elapsed: float) -> None:
    assert (outcome.result, outcome.status) == (egress.Result.TEMPORARY, "4.4.2"), outcome
    assert "attempt exceeded its time limit" in outcome.detail
    assert LEASE / 2 - 0.1 <= elapsed < LEASE


def test_server_that_never_greets_ends_the_attempt_by_the_deadline():
    with silent_server() as hop:
        outcome, elapsed = timed(lambda: send_via([hop]))
    assert_cut_short(outcome, elapsed)


def test_server_that_sits_on_the_data_reply_ends_the_attempt_by_the_deadline(db):
    with partner(data_delay=30) as (server, hop):
        routes.set_route(PARTNER, f"{hop.host}:{hop.port}")
        outcome, elapsed = timed(
            lambda: egress.send(wire=WIRE, mail_from="a@b.test", recipient=RECIPIENT, timeout=SLOW)
        )
        assert egress.idle_connections() == 0  # a session out of step is never reused
    assert_cut_short(outcome, elapsed)
    assert server.delivered == []


def test_server_that_stops_reading_the_message_ends_the_attempt_by_the_deadline():
    # 24 MB (under the 25 MB limit) is far more than the loopback socket buffers hold, so the
    # writes of DATA block; one sendall of it would wait its whole timeout, past the lease.
    big = WIRE + (b"x" * 998 + b"\r\n") * 24_000
    with partner(StallingController) as (server, hop):
        outcome, elapsed = timed(lambda: send_via([hop], wire=big))
    assert_cut_short(outcome, elapsed)
    assert server.connections == 1


def test_no_further_host_is_tried_after_the_deadline():
    with silent_server() as stalled, partner() as (server, hop):
        outcome, elapsed = timed(lambda: send_via([stalled, hop]))
    assert_cut_short(outcome, elapsed)
    assert "hosts not tried: 1" in outcome.detail
    assert (server.connections, server.delivered) == (0, [])


def test_mx_lookup_without_answer_ends_the_attempt_by_the_deadline(db, settings):
    # A DNS server that never answers: its queries wait on the socket until the deadline,
    # not for the resolver's 10 s.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))
        settings.HISP_DNS_SERVERS = [f"127.0.0.1:{dead.getsockname()[1]}"]
        outcome, elapsed = timed(
            lambda: egress.send(wire=WIRE, mail_from="a@b.test", recipient=RECIPIENT)
        )
    assert outcome.result is egress.Result.TEMPORARY
    assert elapsed < LEASE


def test_lookup_is_not_started_after_the_deadline(db, settings):
    settings.HISP_DNS_SERVERS = ["127.0.0.1:9"]  # never asked
    with pytest.raises(dns.exception.Timeout):
        egress.hops(PARTNER, deadline=time.monotonic())


def test_normal_delivery_and_session_reuse_are_unaffected(db):
    with partner() as (server, hop):
        routes.set_route(PARTNER, f"{hop.host}:{hop.port}")
        first = egress.send(wire=WIRE, mail_from="a@b.test", recipient=RECIPIENT)
        # The cached session outlives the first attempt's deadline; the next attempt brings
        # its own, so the session is still probed and reused rather than dropped.
        time.sleep(LEASE / 2 + 0.2)
        second = egress.send(wire=WIRE, mail_from="a@b.test", recipient=RECIPIENT)
    assert (first.result, second.result) == (egress.Result.SENT, egress.Result.SENT)
    assert server.delivered == [WIRE, WIRE]
    assert server.connections == 1
