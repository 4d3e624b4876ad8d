"""An LDAP server found through a partner's SRV record is outside data: whatever it sends, the
LDAP level ends within the discovery time limit and a bounded number of bytes, with a reason,
never a hung or swollen worker nor an exception from deep inside the LDAP library."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from agent.discovery.ldapcert import MAX_RESPONSE_BYTES
from agent.errors import AgentError
from agent.types import Candidates
from tests.agent.discovery.conftest import make_resolver
from tests.support.bind import BindServer, Record, srv_record

pytestmark = pytest.mark.services

# The start of an LDAP message (SEQUENCE, four length bytes) announcing ``size`` bytes.
HEADER = b"\x30\x84"

Talk = Callable[[socket.socket, bytes, threading.Event], None]


@contextmanager
def hostile_ldap(talk: Talk) -> Iterator[int]:
    """A TCP 'directory' on loopback that reads the bind request, then runs ``talk``."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                talk(conn, conn.recv(4096), stop)
            except OSError:
                return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def trickle(conn: socket.socket, _bind: bytes, stop: threading.Event) -> None:
    # Two gigabytes announced, then a byte every 0.2 s: every read gets data well within any
    # per-read time-out, so only an overall deadline ends the exchange.
    conn.sendall(HEADER + (0x7FFFFFFF).to_bytes(4, "big"))
    while not stop.wait(0.2):
        conn.sendall(b"\x04")


def flood(conn: socket.socket, _bind: bytes, stop: threading.Event) -> None:
    size = 2 * MAX_RESPONSE_BYTES
    conn.sendall(HEADER + size.to_bytes(4, "big"))
    chunk = b"\x04" * 65536
    for _ in range(size // len(chunk)):
        if stop.is_set():
            return
        conn.sendall(chunk)


def tlv(tag: int, *parts: bytes) -> bytes:
    """One BER element (short-form length: everything here is under 128 bytes)."""
    body = b"".join(parts)
    assert len(body) < 128
    return bytes((tag, len(body))) + body


def message_id(request: bytes) -> bytes:
    """The messageID INTEGER element of an LDAP request (RFC 4511 4.1.1), to echo it back."""
    assert request[0] == 0x30
    at = 2 if request[1] < 0x80 else 2 + (request[1] & 0x7F)
    assert request[at] == 0x02
    return request[at : at + 2 + request[at + 1]]


def done(request: bytes, tag: int) -> bytes:
    """A success result (RFC 4511 4.1.9) of the given protocolOp tag."""
    return tlv(0x30, message_id(request), tlv(tag, tlv(0x0A, b"\x00"), tlv(0x04), tlv(0x04)))


def root_dse(request: bytes) -> bytes:
    """A searchResultEntry naming one context (RFC 4512 5.1), then searchResultDone."""
    attribute = tlv(0x30, tlv(0x04, b"namingContexts"), tlv(0x31, tlv(0x04, b"dc=x")))
    entry = tlv(0x64, tlv(0x04), tlv(0x30, attribute))
    return tlv(0x30, message_id(request), entry) + done(request, 0x65)


NOT_AN_LDAP_MESSAGE = b"\x30\x02\xff\xff"


def garbage_bind_response(conn: socket.socket, _bind: bytes, stop: threading.Event) -> None:
    conn.sendall(NOT_AN_LDAP_MESSAGE)
    stop.wait(5)


def garbage_search_response(conn: socket.socket, bind: bytes, stop: threading.Event) -> None:
    conn.sendall(done(bind, 0x61))  # bindResponse
    conn.sendall(root_dse(conn.recv(4096)))
    conn.recv(4096)  # the mail= search
    conn.sendall(NOT_AN_LDAP_MESSAGE)
    stop.wait(5)


def every_level(named: BindServer, port: int, zone: str) -> list[Candidates]:
    named.serve_zone(zone, [srv_record("_ldap._tcp", "dir", port), Record("dir", "A", "127.0.0.1")])
    resolver = make_resolver(named.address, timeout=2.0, connect_timeout=1.0)
    levels: list[Candidates] = []
    with pytest.raises(AgentError) as caught:  # a failed level: the agent would retry later
        for level in resolver.candidates(f"bob@{zone}"):
            levels.append(level)
    assert caught.value.permanent is False
    return [level for level in levels if level.source == "ldap"]


@pytest.mark.timeout(60)
def test_a_directory_that_trickles_bytes_forever_is_cut_off_at_the_time_limit(
    named: BindServer,
) -> None:
    with hostile_ldap(trickle) as port:
        started = time.monotonic()
        ldap = every_level(named, port, "trickle.test")
        elapsed = time.monotonic() - started
    assert ldap and all(level.error and "LDAPSocketReceiveError" in level.error for level in ldap)
    assert elapsed < 6.0, elapsed


@pytest.mark.timeout(60)
def test_a_directory_that_floods_is_cut_off_after_a_bounded_number_of_bytes(
    named: BindServer,
) -> None:
    with hostile_ldap(flood) as port:
        ldap = every_level(named, port, "flood.test")
    assert ldap and all(
        level.error and f"more than {MAX_RESPONSE_BYTES} bytes" in level.error for level in ldap
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("talk", [garbage_bind_response, garbage_search_response])
def test_an_answer_that_is_not_an_ldap_message_is_a_malformed_answer(
    named: BindServer, talk: Talk
) -> None:
    with hostile_ldap(talk) as port:
        ldap = every_level(named, port, f"{talk.__name__.replace('_', '-')}.test")
    assert ldap and all(level.error and "malformed answer" in level.error for level in ldap)
