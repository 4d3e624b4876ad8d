"""The POP3S listener on loopback, and clients for it: ``poplib.POP3_SSL`` as a mail client
uses it, and a raw TLS socket for what poplib hides (the wire bytes, dot-stuffing)."""

from __future__ import annotations

import poplib
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django.core.cache import cache

from hisp.models import Address, MailboxEntry, Message
from hisp.pop3 import server
from tests.support.services import unverified_tls as tls

PASSWORD = "correct horse battery"


def start(**overrides) -> server.Pop3Listener:
    cache.clear()  # the login failure counters live in the cache
    listener = server.listener(bind="127.0.0.1", port=0, **overrides)
    listener.start()
    return listener


@pytest.fixture(name="pop3")
def pop3_fixture(transactional_db: None) -> Iterator[server.Pop3Listener]:
    listener = start()
    try:
        yield listener
    finally:
        listener.stop()


def client(listener: server.Pop3Listener) -> poplib.POP3_SSL:
    return poplib.POP3_SSL("127.0.0.1", listener.port, context=tls(), timeout=10)


def logged_in(listener: server.Pop3Listener, login: str, password: str = PASSWORD):
    pop = client(listener)
    pop.user(login)
    pop.pass_(password)
    return pop


class Raw:
    """A TLS connection that sends lines and reads exactly what the server writes."""

    def __init__(self, listener: server.Pop3Listener, *, timeout: float = 10) -> None:
        plain = socket.create_connection(("127.0.0.1", listener.port), timeout=timeout)
        self.sock = tls().wrap_socket(plain)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def command(self, text: str) -> bytes:
        self.send(text.encode() + b"\r\n")
        return self.line()

    def until_dot(self) -> bytes:
        """The body of a multi-line response as sent (still stuffed), up to the final dot."""
        data = b""
        while (line := self.line()) != b".\r\n":
            assert line, "connection closed inside a multi-line response"
            data += line
        return data

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def deliver(
    address: Address,
    content: bytes,
    *,
    signer: str = "doc@partner.example.net",
    envelope_from: str = "doc@partner.example.net",
    trace: str = "Received: from mx.partner.example.net by hisp; Wed, 25 Nov 2026 13:00:00 +0000\r\n",
    at: datetime | None = None,
    folder: str = MailboxEntry.SystemFolder.INBOX,
) -> MailboxEntry:
    """An inbound message as the pipeline leaves it: wire bytes in ``raw``, the verified inner
    message in ``content``, and an INBOX entry."""
    message = Message.objects.create(
        direction=Message.Direction.INBOUND,
        state=Message.State.DELIVERED,
        message_id="<m@partner.example.net>",
        envelope_from=envelope_from,
        envelope_to=[address.address],
        raw=b"Content-Type: application/pkcs7-mime\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQ\r\n",
        trace=trace,
        content=content,
        signer=signer,
    )
    return MailboxEntry.objects.create(
        address=address,
        message=message,
        folder=folder,
        received_at=at or datetime.now(UTC),
    )
