"""Second review of the listeners' resource limits, over real sockets: how many sessions one
listener holds from all client addresses together, how soon a nearly full listener closes idle
ones, and how many bytes of messages its sessions hold in memory at once. Each test fails on
the listener as it was before this review."""

from __future__ import annotations

import logging
import time

import pytest

from hisp.models import Message
from hisp.smtp import server
from hisp.smtp.protocol import DATA_BUDGET_MESSAGES, MAX_SESSIONS, NO_ROOM, ClientConnections
from tests.hisp.mail.conftest import _start
from tests.hisp.mail.test_smtp_hostile_clients import (
    _connect,
    _greeting_soon,
    _reply,
    _say,
)

SOURCES = [f"127.0.0.{n}" for n in range(2, 8)]  # six client addresses


def test_many_addresses_together_hold_a_bounded_number_of_sessions(transactional_db, bob, caplog):
    """Each address stays under its own limit (2), yet together they reach the listener's
    (4): the next client, from an address holding nothing, is told 421 4.3.2 and closed,
    while the sessions already held go on. Without a total, clients from many addresses ran
    the process out of file descriptors."""
    caplog.set_level(logging.WARNING, logger="mail.log")
    for controller in _start(server.backbone, max_connections_per_address=2, max_sessions=4):
        held = [_connect(controller, source) for source in SOURCES[:2] for _ in range(2)]
        try:
            assert all(_reply(sock).startswith(b"220 ") for sock in held)
            extra = _connect(controller, SOURCES[2])
            assert _reply(extra) == b"421 4.3.2 Too many connections; try again later"
            assert extra.recv(1024) == b""  # and closed
            extra.close()
            assert _say(held[0], b"EHLO partner.example.net\r\n").startswith(b"250 ")
            assert _say(held[0], b"NOOP\r\n") == b"250 OK"
            # A place given back is a place for anyone.
            held.pop().close()
            assert _greeting_soon(controller, SOURCES[3]).startswith(b"220 ")
        finally:
            for sock in held:
                sock.close()
    assert "the listener holds 4 sessions" in caplog.text


def test_a_refused_session_takes_no_place():
    """Refusals are not counted, and every release gives back exactly one place, so the
    count cannot drift up under a flood until the listener refuses everyone."""
    connections = ClientConnections(limit=1, total=2)
    assert connections.admit("192.0.2.1") is None
    assert connections.admit("192.0.2.1") is not None  # its own limit
    assert connections.admit("192.0.2.2") is None
    assert connections.admit("192.0.2.3") is not None  # the total
    connections.release("192.0.2.1")
    assert connections.admit("192.0.2.3") is None
    connections.release("192.0.2.2")
    connections.release("192.0.2.3")
    assert all(connections.admit(f"192.0.2.{n}") is None for n in (4, 5))


def test_the_default_total_is_above_what_partners_open_and_below_the_descriptors():
    """Several partner MTAs with 20 sessions each fit; two listeners at the limit leave room
    under the common soft limit of 1024 descriptors."""
    assert 200 <= MAX_SESSIONS and 2 * MAX_SESSIONS + 100 <= 1024
    assert ClientConnections(limit=50).total == MAX_SESSIONS


# --- a nearly full listener (stress) -------------------------------------------------------

STRESS = 0.5  # seconds: the idle timeout of a nearly full listener in these tests


def _stressed(**limits):
    """A backbone listener of 4 sessions whose idle timeout stays the default 5 minutes until
    three are held."""
    return _start(
        server.backbone,
        max_connections_per_address=10,
        max_sessions=4,
        stress_timeout=STRESS,
        **limits,
    )


def _greeted(controller, count: int) -> list:
    socks = [_connect(controller) for _ in range(count)]
    for sock in socks:
        assert _reply(sock).startswith(b"220 ")
    return socks


def test_a_nearly_full_listener_closes_idle_sessions_soon(transactional_db, bob):
    """A few addresses trickling a NOOP just within the 5-minute idle timeout held every
    session for hours: once three of four are held, an idle session gets 421 after STRESS."""
    for controller in _stressed():
        socks = _greeted(controller, 3)
        try:
            assert _say(socks[0], b"EHLO partner.example.net\r\n").startswith(b"250 ")
            started = time.monotonic()
            socks[0].settimeout(10)
            assert _reply(socks[0]).startswith(b"421 4.4.2 ")
            assert time.monotonic() - started < 5
            # Its place is free again: a new client is greeted.
            assert _greeting_soon(controller).startswith(b"220 ")
        finally:
            for sock in socks:
                sock.close()


def test_a_trickle_of_data_on_a_nearly_full_listener_is_cut_off_and_stores_nothing(
    transactional_db, bob
):
    """Slowloris in DATA: a byte now and then, each within the normal idle timeout. Once the
    listener is nearly full, a gap longer than STRESS ends the session, and nothing of the
    message is kept."""
    for controller in _stressed():
        others = _greeted(controller, 2)
        sock = _connect(controller)
        try:
            assert _reply(sock).startswith(b"220 ")
            _say(sock, b"EHLO partner.example.net\r\n")
            _say(sock, b"MAIL FROM:<doc@partner.example.net>\r\n")
            _say(sock, f"RCPT TO:<{bob.address}>\r\n".encode())
            assert _say(sock, b"DATA\r\n").startswith(b"354")
            sock.sendall(b"Subject: slow\r\n")
            sock.settimeout(10)
            started = time.monotonic()
            reply = _reply(sock)  # the client sends nothing more
            assert reply.startswith(b"421 4.4.2 ")
            assert time.monotonic() - started < 5
        finally:
            sock.close()
            for other in others:
                other.close()
    assert not Message.objects.exists()


def test_below_the_stress_share_the_idle_timeout_is_the_normal_one(transactional_db, bob):
    """Two of four sessions is ordinary load: an idle session is not cut at STRESS."""
    for controller in _stressed():
        socks = _greeted(controller, 2)
        try:
            assert _say(socks[0], b"EHLO partner.example.net\r\n").startswith(b"250 ")
            socks[0].settimeout(4 * STRESS)
            with pytest.raises(TimeoutError):
                socks[0].recv(1024)
            assert _say(socks[0], b"NOOP\r\n") == b"250 OK"
        finally:
            for sock in socks:
                sock.close()


def test_the_stress_timeout_is_short_only_under_load():
    connections = ClientConnections(limit=10, total=4, stress_timeout=STRESS)
    for n in range(2):
        connections.admit(f"192.0.2.{n}")
    assert connections.idle_timeout(300.0) == 300.0
    connections.admit("192.0.2.9")
    assert connections.idle_timeout(300.0) == STRESS
    assert connections.idle_timeout(0.1) == 0.1  # never longer than the normal one
    connections.release("192.0.2.9")
    assert connections.idle_timeout(300.0) == 300.0


# --- messages held in memory at once -------------------------------------------------------

BUDGET = 100_000


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _into_data(controller, recipient: str, source: str = "127.0.0.1"):
    sock = _connect(controller, source)
    assert _reply(sock).startswith(b"220 ")
    _say(sock, b"EHLO partner.example.net\r\n")
    assert _say(sock, b"MAIL FROM:<doc@partner.example.net>\r\n").startswith(b"250")
    assert _say(sock, f"RCPT TO:<{recipient}>\r\n".encode()).startswith(b"250")
    assert _say(sock, b"DATA\r\n").startswith(b"354")
    return sock


def _body(size: int) -> bytes:
    line = b"x" * 98 + b"\r\n"
    return b"Subject: big\r\n\r\n" + line * (size // len(line))


def test_messages_held_at_once_are_bounded_and_the_one_without_room_gets_452(
    transactional_db, bob, caplog
):
    """Every session kept its whole message in memory until the commit, bounded only by the
    session limit times the message size: clients sending large messages at once could run
    the listener out of memory, losing every session with it. Past the budget the message is
    drained and answered 452 4.3.1 (the sender retries), and the session goes on."""
    caplog.set_level(logging.WARNING, logger="mail.log")
    for controller in _start(server.backbone, max_buffered=BUDGET):
        first = _into_data(controller, bob.address)
        second = _into_data(controller, bob.address, "127.0.0.2")
        try:
            first.sendall(_body(80_000))
            _wait_for(lambda: controller.budget.held >= 80_000, "the first message is held")
            assert _say(second, _body(50_000) + b".\r\n") == NO_ROOM.encode()
            assert _say(second, b"NOOP\r\n") == b"250 OK"
            assert controller.budget.held < BUDGET
            # The first message was not disturbed, and once answered gives its room back.
            assert _say(first, b".\r\n").startswith(b"250 2.0.0 OK queued as ")
            _wait_for(lambda: controller.budget.held == 0, "the room is given back")
            for line in (
                b"MAIL FROM:<doc@partner.example.net>\r\n",
                f"RCPT TO:<{bob.address}>\r\n".encode(),
            ):
                assert _say(second, line).startswith(b"250")
            assert _say(second, b"DATA\r\n").startswith(b"354")
            assert _say(second, _body(50_000) + b".\r\n").startswith(b"250 2.0.0 OK queued as ")
        finally:
            first.close()
            second.close()
        _wait_for(lambda: controller.budget.held == 0, "nothing is held after the sessions")
    assert Message.objects.count() == 2
    assert "no room for its message" in caplog.text


@pytest.mark.parametrize("ending", ["lost", "too-big"])
def test_a_message_that_ends_without_a_store_gives_its_room_back(transactional_db, bob, ending):
    """A connection lost mid-DATA, or a message over the size limit, keeps nothing: its room
    is given back, or a few such clients would shut out everyone for good."""
    for controller in _start(server.backbone, max_buffered=BUDGET, data_size_limit=60_000):
        sock = _into_data(controller, bob.address)
        try:
            sock.sendall(_body(50_000))
            _wait_for(lambda: controller.budget.held >= 50_000, "the message is held")
            if ending == "lost":
                sock.close()
            else:
                assert _say(sock, _body(50_000) + b".\r\n").startswith(b"552 ")
            _wait_for(lambda: controller.budget.held == 0, "the room is given back")
        finally:
            sock.close()
    assert not Message.objects.exists()


def test_the_default_budget_holds_a_number_of_full_size_messages(transactional_db, settings):
    settings.HISP_MAX_MESSAGE_BYTES = 1_000_000
    for controller in _start(server.backbone):
        assert controller.budget.limit == DATA_BUDGET_MESSAGES * 1_000_000
