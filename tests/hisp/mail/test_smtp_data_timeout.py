"""The idle timeout around DATA (hisp/smtp/protocol.py) on a real backbone listener: during
DATA "idle" means no bytes for the timeout, however long the whole transfer takes, and the
timer never fires while the handler commits, so a committed message always gets its 250 (a
421 instead would make the sending HISP retry and store it twice)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

from aiosmtpd.smtp import SMTP, Envelope, Session

from hisp.models import Message
from hisp.smtp import server
from hisp.smtp.backbone import BackboneHandler
from hisp.smtp.protocol import HispController, smtp_options
from tests.hisp.mail.conftest import _start
from tests.hisp.mail.test_ingress import MESSAGE, _raw_session, _say
from tests.support.services import free_port

TIMEOUT = 1.0
GAP = 0.5  # between pieces of DATA: half the timeout


def _start_data(controller: HispController, recipient: str) -> socket.socket:
    sock = _raw_session(controller)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece its own segment
    _say(sock, b"EHLO partner.example.net\r\n")
    _say(sock, b"MAIL FROM:<doc@partner.example.net>\r\n")
    _say(sock, f"RCPT TO:<{recipient}>\r\n".encode())
    assert _say(sock, b"DATA\r\n").startswith(b"354")
    return sock


def _send_slowly(sock: socket.socket, data: bytes, pieces: int) -> None:
    size = -(-len(data) // pieces)
    for start in range(0, len(data), size):
        if start:
            time.sleep(GAP)
        sock.sendall(data[start : start + size])


def _reply(sock: socket.socket, wait: float = 5) -> bytes:
    sock.settimeout(wait)
    return sock.recv(1024)


def test_slow_data_within_the_idle_timeout_per_piece_gets_250_and_is_stored_once(bob):
    for controller in _start(server.backbone, timeout=TIMEOUT):
        sock = _start_data(controller, bob.address)
        try:
            started = time.monotonic()
            _send_slowly(sock, MESSAGE + b".\r\n", pieces=7)
            assert time.monotonic() - started >= 3 * TIMEOUT  # the transfer outlasts the timeout
            reply = _reply(sock)
            assert _say(sock, b"NOOP\r\n") == b"250 OK"  # the session carries on
        finally:
            sock.close()
    assert reply.startswith(b"250 2.0.0 OK queued as ")
    assert Message.objects.get().raw == MESSAGE.replace(b"\r\n..", b"\r\n.")


def test_client_stalling_after_slow_data_gets_421_a_timeout_after_its_last_bytes(bob):
    for controller in _start(server.backbone, timeout=TIMEOUT):
        sock = _start_data(controller, bob.address)
        try:
            _send_slowly(sock, MESSAGE[:60], pieces=4)  # 1.5 s of DATA, then nothing more
            stalled = time.monotonic()
            reply = _reply(sock)
            waited = time.monotonic() - stalled
            assert _reply(sock) == b""  # closed
        finally:
            sock.close()
    assert reply.startswith(b"421 4.4.2 ")
    assert TIMEOUT - 0.2 <= waited <= TIMEOUT + 1
    assert Message.objects.count() == 0


class SlowToAnswer(BackboneHandler):
    """The production handler, then a pause longer than the idle timeout before the reply: the
    window in which a timer firing would leave a committed message without its 250."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        status = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(TIMEOUT * 1.5)
        return status


class SlowToFail(BackboneHandler):
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(TIMEOUT * 1.5)
        raise RuntimeError("the store went away")


def _serve(handler: BackboneHandler) -> Iterator[HispController]:
    controller = HispController(
        handler, hostname="127.0.0.1", port=free_port(), **smtp_options(timeout=TIMEOUT)
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def test_handler_slower_than_the_idle_timeout_still_sends_its_250(bob):
    for controller in _serve(SlowToAnswer()):
        sock = _start_data(controller, bob.address)
        try:
            sock.sendall(MESSAGE + b".\r\n")
            reply = _reply(sock)
            answered = time.monotonic()
            # The timer restarts with the reply: an idle session is still closed after it.
            idle = _reply(sock)
            waited = time.monotonic() - answered
        finally:
            sock.close()
    assert reply.startswith(b"250 2.0.0 OK queued as ")
    assert Message.objects.count() == 1
    assert idle.startswith(b"421 4.4.2 ")
    assert TIMEOUT - 0.2 <= waited <= TIMEOUT + 1


def test_handler_failing_after_the_idle_timeout_is_answered_and_the_session_closed(bob):
    for controller in _serve(SlowToFail()):
        sock = _start_data(controller, bob.address)
        try:
            sock.sendall(MESSAGE + b".\r\n")
            reply = _reply(sock)
            after = _reply(sock)
        finally:
            sock.close()
    assert reply.startswith(b"421 4.3.0 Local error")  # BackboneHandler.handle_exception
    assert after == b""  # a 421 ends the session (RFC 5321 section 3.8), at once
    assert Message.objects.count() == 0



def test_client_half_closing_while_the_handler_commits_still_gets_its_250(bob):
    """aiosmtpd cancels the session on EOF; the handler under way is let finish and answer."""
    for controller in _serve(SlowToAnswer()):
        sock = _start_data(controller, bob.address)
        try:
            sock.sendall(MESSAGE + b".\r\nQUIT\r\n")
            time.sleep(TIMEOUT / 2)  # the message is committed, the handler not yet done
            sock.shutdown(socket.SHUT_WR)
            reply = _reply(sock)
        finally:
            sock.close()
    assert reply.startswith(b"250 2.0.0 OK queued as ")
    assert Message.objects.count() == 1
