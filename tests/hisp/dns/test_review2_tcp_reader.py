"""A TCP client that sends queries but never reads the answers must not hold one of the
responder's connection slots for ever (RFC 7766 6.2.3: the server closes it); otherwise a few
hundred such clients shut partners out of every answer too large for UDP."""

from __future__ import annotations

import socket
import time

import dns.message
import pytest

from hisp.dns import server as dns_server
from hisp.models import Address
from hisp.services import pki
from tests.hisp.dns.conftest import DOMAIN, Responder


def test_a_client_that_never_reads_its_answers_is_disconnected(
    responder: Responder, alice: Address, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dns_server, "TCP_IDLE_TIMEOUT", 0.5)
    pki.issue_for(alice.address, key_bits=4096)  # a second, larger certificate: big answers
    query = dns.message.make_query(f"alice.{DOMAIN}", "CERT").to_wire()
    framed = len(query).to_bytes(2, "big") + query
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the handshake
        client.settimeout(5)
        client.connect((responder.host, responder.port))
        client.sendall(framed)
        size = int.from_bytes(client.recv(2, socket.MSG_WAITALL), "big")
        assert size > 1000  # a CERT answer, not an error
        client.recv(size, socket.MSG_WAITALL)
        # Enough queries that the answers overflow every buffer between us and the server.
        sent = 0
        client.settimeout(0.5)
        try:
            while sent < 20_000:
                client.sendall(framed * 50)
                sent += 50
        except (TimeoutError, ConnectionError):
            pass  # the server stopped reading: its writes are blocked, or it closed
        deadline = time.monotonic() + 10
        while responder.server._connections:
            assert time.monotonic() < deadline, "the connection is still held"
            time.sleep(0.05)
