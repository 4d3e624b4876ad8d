"""One client cannot take every TCP slot of the responder (RFC 7766 6.2.2): past
``MAX_TCP_PER_CLIENT`` connections from one address, its next one is closed at once, while
another client is still answered."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack

import dns.message
import dns.rcode
import pytest

from hisp.dns.server import MAX_TCP_PER_CLIENT
from hisp.models import Address
from tests.hisp.dns.conftest import DOMAIN, Responder


def ask(client: socket.socket) -> dns.message.Message | None:
    """One query over ``client``; None when the server closed the connection instead."""
    query = dns.message.make_query(f"alice.{DOMAIN}", "CERT").to_wire()
    try:
        client.sendall(len(query).to_bytes(2, "big") + query)
        prefix = client.recv(2, socket.MSG_WAITALL)
        if len(prefix) < 2:
            return None
        return dns.message.from_wire(client.recv(int.from_bytes(prefix, "big"), socket.MSG_WAITALL))
    except ConnectionError:
        return None


def connect(responder: Responder, *, source: str) -> socket.socket:
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(5)
    client.bind((source, 0))
    client.connect((responder.host, responder.port))
    return client


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def test_one_client_gets_at_most_its_share_of_tcp_connections(
    responder: Responder, alice: Address, stack: ExitStack
) -> None:
    for _ in range(MAX_TCP_PER_CLIENT):  # each answered, so each holds its slot now
        held = stack.enter_context(connect(responder, source="127.0.0.1"))
        answer = ask(held)
        assert answer is not None and answer.rcode() == dns.rcode.NOERROR
    one_too_many = stack.enter_context(connect(responder, source="127.0.0.1"))
    assert ask(one_too_many) is None
    other = stack.enter_context(connect(responder, source="127.0.0.2"))
    answer = ask(other)
    assert answer is not None and answer.rcode() == dns.rcode.NOERROR
