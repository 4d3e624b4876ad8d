"""Second review of the backbone listener: guessing which Direct addresses exist, one RCPT
after another, over a real socket. Refused recipients are answered ever more slowly and,
past a limit, the session is closed; a session that delivers mail starts afresh. Each test
fails on the listener as it was before this review."""

from __future__ import annotations

import logging
import time

from hisp.models import Message
from hisp.smtp import server
from hisp.smtp.protocol import FAST_REFUSALS, REFUSED_RECIPIENT_LIMIT, TOO_MANY_REFUSED
from tests.hisp.mail.conftest import HOSTED, _start
from tests.hisp.mail.test_ingress import MESSAGE
from tests.hisp.mail.test_smtp_hostile_clients import _connect, _reply, _say

LIMIT = FAST_REFUSALS + 4
DELAY = 0.3


def _guessing(delay: float = DELAY):
    return _start(server.backbone, refused_recipient_limit=LIMIT, refused_recipient_delay=delay)


def _transaction(controller):
    sock = _connect(controller)
    assert _reply(sock).startswith(b"220 ")
    _say(sock, b"EHLO harvester.example.net\r\n")
    assert _say(sock, b"MAIL FROM:<probe@harvester.example.net>\r\n").startswith(b"250")
    return sock


def _guess(sock, n: int) -> bytes:
    return _say(sock, f"RCPT TO:<guess{n}@{HOSTED}>\r\n".encode())


def test_guessed_recipients_are_slowed_then_the_session_is_closed(transactional_db, bob, caplog):
    """A client could try 20,000 addresses a session at full speed, and learn from 250 or
    550 which exist. Past FAST_REFUSALS each refusal waits, past the limit the session gets
    421 and is closed."""
    caplog.set_level(logging.WARNING, logger="mail.log")
    for controller in _guessing():
        sock = _transaction(controller)
        try:
            for n in range(FAST_REFUSALS):
                assert _guess(sock, n).startswith(b"550 5.1.1 ")
            for n in range(FAST_REFUSALS, LIMIT):
                started = time.monotonic()
                assert _guess(sock, n).startswith(b"550 5.1.1 ")
                assert time.monotonic() - started >= DELAY * 0.9
            assert _guess(sock, LIMIT) == TOO_MANY_REFUSED.encode()
            assert _reply(sock) == b""  # closed
        finally:
            sock.close()
    assert "had too many recipients refused" in caplog.text


def test_relay_probes_count_as_refusals_too(transactional_db, bob):
    for controller in _guessing():
        sock = _transaction(controller)
        try:
            for n in range(LIMIT):
                reply = _say(sock, f"RCPT TO:<guess{n}@elsewhere.example.com>\r\n".encode())
                assert reply.startswith(b"550 5.7.1 ")
            assert _say(sock, f"RCPT TO:<{bob.address}>\r\n".encode()).startswith(b"250")
            reply = _say(sock, b"RCPT TO:<more@elsewhere.example.com>\r\n")
            assert reply == TOO_MANY_REFUSED.encode()
        finally:
            sock.close()


def test_a_delivered_message_starts_the_count_afresh(transactional_db, bob):
    """A partner sending message after message, each to a few addresses that have gone, is
    never cut off: what counts is refusals since the session last delivered mail."""
    for controller in _guessing(delay=0.0):
        sock = _transaction(controller)
        try:
            for round_ in range(3):
                if round_:
                    assert _say(sock, b"MAIL FROM:<doc@partner.example.net>\r\n")[:3] == b"250"
                for n in range(LIMIT - 2):
                    assert _guess(sock, n).startswith(b"550 5.1.1 ")
                assert _say(sock, f"RCPT TO:<{bob.address}>\r\n".encode()).startswith(b"250")
                assert _say(sock, b"DATA\r\n").startswith(b"354")
                assert _say(sock, MESSAGE + b".\r\n").startswith(b"250 2.0.0 OK queued as ")
        finally:
            sock.close()
    assert Message.objects.count() == 3


def test_a_full_message_of_gone_recipients_is_still_answered(transactional_db, bob):
    """The default limit lets one transaction have every one of its MAX_RECIPIENTS refused
    and still take the next RCPT's answer, so no partner is cut off within a message."""
    for controller in _start(server.backbone, refused_recipient_delay=0.0):
        sock = _transaction(controller)
        try:
            for n in range(REFUSED_RECIPIENT_LIMIT):
                assert _guess(sock, n).startswith(b"550 5.1.1 ")
            assert _say(sock, f"RCPT TO:<{bob.address}>\r\n".encode()).startswith(b"250")
        finally:
            sock.close()
