"""Egress against partner servers that behave in the ways real ones do, each a real aiosmtpd
(or, for a refusing greeting, a real TCP listener) on loopback: a SIZE limit below the message,
STARTTLS refused or failing its handshake, a 554 greeting on the preferred host, a server that
does not know EHLO."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from hisp import egress
from tests.support.services import free_port

pytestmark = pytest.mark.usefixtures("no_idle_egress_sessions")

WIRE = b"From: alice@hospital.example.org\r\nSubject: x\r\n\r\n" + b"body line\r\n" * 50
RECIPIENT = "doc@partner.example.net"


class Partner:
    def __init__(self, *, checking: float = 0.0) -> None:
        self.checking = checking  # seconds it takes before it answers the final dot
        self.mail_options: list[list[str]] = []
        self.delivered: list[tuple[bool, bytes]] = []  # (over TLS, bytes)

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:
        self.mail_options.append(list(mail_options))
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        await asyncio.sleep(self.checking)
        self.delivered.append((session.ssl is not None, envelope.original_content))
        return "250 2.0.0 OK"


class _RefusesStartTLS(SMTP):
    async def smtp_STARTTLS(self, arg: str) -> None:
        await self.push("454 4.7.0 TLS not available due to temporary reason")


class _NoEhlo(SMTP):
    async def smtp_EHLO(self, hostname: str) -> None:
        await self.push("502 5.5.2 Command not recognized")


class _NoGreeting(_NoEhlo):
    async def smtp_HELO(self, hostname: str) -> None:
        await self.push("550 5.7.1 Not from your network")


class _CannotVerify(Partner):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        return "252 2.1.5 Cannot VRFY user, but will accept message and attempt delivery"


class _Controller(Controller):
    def __init__(self, handler, *, server: type[SMTP] = SMTP, **kwargs) -> None:
        self.server_class = server
        super().__init__(handler, hostname="127.0.0.1", port=free_port(), **kwargs)

    def factory(self) -> SMTP:
        return self.server_class(self.handler, **self.SMTP_kwargs)


@contextmanager
def partner(*, checking: float = 0.0, **kwargs) -> Iterator[tuple[Partner, egress.Hop]]:
    handler = Partner(checking=checking)
    controller = _Controller(handler, **kwargs)
    controller.start()
    try:
        yield handler, egress.Hop("127.0.0.1", controller.port)
    finally:
        controller.stop()


def _without_certificate() -> ssl.SSLContext:
    """A server context with no certificate: STARTTLS is offered, every handshake fails."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)


@contextmanager
def refusing_greeting(greeting: bytes = b"554 5.3.2 No SMTP service here\r\n") -> Iterator[egress.Hop]:
    """A listener whose every connection is greeted with 554 (RFC 5321 section 3.1)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(greeting)
                conn.settimeout(2)
                try:
                    while conn.recv(4096):
                        pass
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield egress.Hop("127.0.0.1", listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def _send(*hops: egress.Hop, **kwargs) -> egress.Outcome:
    return egress.send_via(
        list(hops), wire=WIRE, mail_from="a@b.test", recipients=[RECIPIENT], **kwargs
    )[RECIPIENT]


def test_message_over_the_servers_size_limit_fails_at_once_without_upload() -> None:
    with partner(data_size_limit=len(WIRE) - 1) as (handler, hop):
        outcome = _send(hop)
    assert (outcome.result, outcome.status) == (egress.Result.PERMANENT, "5.3.4"), outcome
    assert f"limit of {len(WIRE) - 1} bytes" in outcome.detail
    assert handler.mail_options == []  # not even a MAIL: nothing was uploaded
    assert handler.delivered == []


def test_mail_from_declares_the_size_to_a_server_with_the_size_extension() -> None:
    with partner(data_size_limit=len(WIRE) * 2) as (handler, hop):
        outcome = _send(hop)
    assert outcome.result is egress.Result.SENT, outcome
    assert handler.mail_options == [[f"SIZE={len(WIRE)}"]]


def test_refused_starttls_goes_on_in_the_clear_when_tls_is_not_required() -> None:
    with partner(server=_RefusesStartTLS, tls_context=_without_certificate()) as (handler, hop):
        outcome = _send(hop)
    assert outcome.result is egress.Result.SENT, outcome
    assert handler.delivered == [(False, WIRE)]


def test_refused_starttls_sends_nothing_when_tls_is_required() -> None:
    with partner(server=_RefusesStartTLS, tls_context=_without_certificate()) as (handler, hop):
        outcome = _send(egress.Hop(hop.host, hop.port, require_tls=True))
    assert (outcome.result, outcome.status) == (egress.Result.TEMPORARY, "4.7.10"), outcome
    assert "454" in outcome.detail
    assert handler.mail_options == [] and handler.delivered == []


def test_failed_tls_handshake_is_retried_in_the_clear_when_tls_is_not_required() -> None:
    with partner(tls_context=_without_certificate()) as (handler, hop):
        outcome = _send(hop)
    assert outcome.result is egress.Result.SENT, outcome
    assert handler.delivered == [(False, WIRE)]


def test_failed_tls_handshake_sends_nothing_when_tls_is_required() -> None:
    with partner(tls_context=_without_certificate()) as (handler, hop):
        outcome = _send(egress.Hop(hop.host, hop.port, require_tls=True))
    assert outcome.result is egress.Result.TEMPORARY, outcome
    assert handler.mail_options == [] and handler.delivered == []


def test_a_554_greeting_moves_on_to_the_next_exchanger() -> None:
    with refusing_greeting() as refusing, partner() as (handler, hop):
        outcome = _send(refusing, hop)
    assert outcome.result is egress.Result.SENT, outcome
    assert handler.delivered == [(False, WIRE)]


def test_a_554_greeting_alone_is_a_temporary_failure() -> None:
    with refusing_greeting() as refusing:
        outcome = _send(refusing)
    assert outcome.result is egress.Result.TEMPORARY, outcome
    assert outcome.detail.startswith("554 5.3.2")


def test_a_server_that_does_not_know_ehlo_is_greeted_with_helo() -> None:
    with partner(server=_NoEhlo) as (handler, hop):
        outcome = _send(hop)
    assert outcome.result is egress.Result.SENT, outcome
    assert handler.delivered == [(False, WIRE)]


def test_a_server_refusing_both_greetings_is_a_temporary_host_failure() -> None:
    with partner(server=_NoGreeting) as (handler, hop):
        outcome = _send(hop)
    assert (outcome.result, outcome.status) == (egress.Result.TEMPORARY, "4.4.1"), outcome
    assert "refused EHLO and HELO" in outcome.detail
    assert handler.delivered == []


def test_reply_to_the_final_dot_is_waited_for_longer_than_a_command() -> None:
    # RFC 5321 4.5.3.2.6: a server checking the message takes longer than a command; giving up
    # after a command's timeout would make the next attempt a second copy.
    with partner(checking=1.5) as (handler, hop):
        start = time.monotonic()
        outcome = _send(hop, timeout=0.5, deadline=start + 10)
    assert outcome.result is egress.Result.SENT, outcome
    assert handler.delivered == [(False, WIRE)]


def test_reply_to_the_final_dot_is_still_not_waited_for_past_the_deadline() -> None:
    with partner(checking=5) as (_handler, hop):
        start = time.monotonic()
        outcome = _send(hop, timeout=0.5, deadline=start + 1)
        elapsed = time.monotonic() - start
    assert (outcome.result, outcome.status) == (egress.Result.TEMPORARY, "4.4.2"), outcome
    assert elapsed < 2


def test_an_out_of_protocol_2xx_to_rcpt_never_counts_as_sent() -> None:
    # RCPT succeeds with 250 or 251 only (RFC 5321 4.1.1.3); after a 252 no DATA is sent, so
    # the message did not leave and must be tried again, not recorded as delivered.
    handler = _CannotVerify()
    controller = _Controller(handler)
    controller.start()
    try:
        outcome = _send(egress.Hop("127.0.0.1", controller.port))
    finally:
        controller.stop()
    assert (outcome.result, outcome.status) == (egress.Result.TEMPORARY, "4.5.0"), outcome
    assert handler.delivered == []


def test_reply_codes_outside_smtp_are_never_a_verdict_on_the_mail() -> None:
    assert egress.Outcome.from_reply(999, "5.1.1 nonsense").result is egress.Result.TEMPORARY
    assert egress.Outcome.from_reply(-1, "garbage").status == "4.0.0"


def test_a_reply_line_over_8_kb_is_a_broken_session_not_a_refusal() -> None:
    with refusing_greeting(b"220 " + b"x" * 9000 + b"\r\n") as long, partner() as (handler, hop):
        alone = _send(long)
        outcome = _send(long, hop)
    assert (alone.result, alone.status) == (egress.Result.TEMPORARY, "4.4.1"), alone
    assert outcome.result is egress.Result.SENT, outcome
    assert handler.delivered == [(False, WIRE)]


def test_a_server_insisting_on_tls_after_a_failed_handshake_is_retried_not_failed() -> None:
    # Its "530 Must issue a STARTTLS command first" in the clear says nothing about the mail:
    # the handshake may have failed by chance, and the next attempt tries TLS again.
    with partner(tls_context=_without_certificate(), require_starttls=True) as (handler, hop):
        outcome = _send(hop)
    assert (outcome.result, outcome.status) == (egress.Result.TEMPORARY, "4.7.10"), outcome
    assert "530" in outcome.detail
    assert handler.delivered == []


@contextmanager
def endless_greeting() -> Iterator[egress.Hop]:
    """A listener that greets with "220-" continuation lines and never a last line."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            line = b"220-" + b"x" * 1000 + b"\r\n"
            try:
                while True:
                    conn.sendall(line * 64)
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield egress.Hop("127.0.0.1", listener.getsockname()[1])
    finally:
        listener.close()
        thread.join(5)


def test_a_reply_without_end_is_cut_off_not_kept_until_the_deadline() -> None:
    with endless_greeting() as hop:
        start = time.monotonic()
        outcome = _send(hop, deadline=start + 8)
        elapsed = time.monotonic() - start
    assert (outcome.result, outcome.status) == (egress.Result.TEMPORARY, "4.4.1"), outcome
    assert f"longer than {egress.MAX_REPLY} bytes" in outcome.detail
    assert elapsed < 4
