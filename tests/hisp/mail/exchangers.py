"""A partner's mail exchanger for the MX tests: aiosmtpd on port 25 of a loopback address of its
own (a random 127.x.y.z, so parallel tests never meet), keeping what it receives."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller

from tests.support.services import missing


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 OK"


def loopback() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


@pytest.fixture
def exchanger() -> Iterator[tuple[str, Sink]]:
    """An MX host: its address and what it received."""
    sink, address = Sink(), loopback()
    controller = Controller(sink, hostname=address, port=25)
    try:
        controller.start()
    except (OSError, RuntimeError) as exc:  # port 25 needs root (bin/test runs as root)
        missing(f"an SMTP listener on {address}:25 ({exc})")
    yield address, sink
    controller.stop()
