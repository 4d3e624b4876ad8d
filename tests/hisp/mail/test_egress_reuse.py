"""Egress connection reuse: one SMTP session carries many deliveries to the same hop, is checked
with RSET before it carries the next one, and is never used where it could lose or duplicate
mail. Real aiosmtpd servers on loopback count the connections they accept."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings

from hisp import egress
from hisp.services import routes
from hisp.tls import write_self_signed
from tests.support.services import free_port

pytestmark = pytest.mark.usefixtures("no_idle_egress_sessions")

WIRE = b"From: alice@hospital.example.org\r\nSubject: x\r\n\r\nbody\r\n"
PARTNER = "partner.example.net"
RECIPIENT = f"doc@{PARTNER}"


@dataclass
class Delivery:
    connection: int  # which accepted connection carried it (1 = the first)
    rcpt_tos: list[str]
    tls: bool


@dataclass
class CountingHandler:
    """Counts connections (the first EHLO of each: a STARTTLS session says EHLO again, over
    TLS), RSETs and QUITs, and records deliveries. ``on_data`` may misbehave on purpose."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    rset_reply: str = "250 OK"
    on_data: Callable[[CountingHandler, object], object] | None = None
    connections: int = 0
    rsets: int = 0
    quits: int = 0
    data_commands: int = 0
    delivered: list[Delivery] = field(default_factory=list)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        if session.ssl is None:
            self.connections += 1
            session.number = self.connections
        return responses

    async def handle_RCPT(self, server, session, envelope, address, options) -> str:
        reply = self.rcpt_replies.get(address.partition("@")[0], "250 OK")
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_RSET(self, server, session, envelope) -> str:
        self.rsets += 1
        return self.rset_reply

    async def handle_QUIT(self, server, session, envelope) -> str:
        self.quits += 1
        return "221 Bye"

    async def handle_DATA(self, server, session, envelope) -> str:
        self.data_commands += 1
        number = getattr(session, "number", None)
        if number is None:  # after STARTTLS aiosmtpd starts a new session object
            number = self.connections
        self.delivered.append(Delivery(number, list(envelope.rcpt_tos), session.ssl is not None))
        if self.on_data is not None:
            await self.on_data(self, server)  # type: ignore[misc]
        return "250 2.0.0 OK"


@contextmanager
def smtp_server(
    tls_context: ssl.SSLContext | None = None, **script
) -> Iterator[tuple[CountingHandler, egress.Hop]]:
    handler = CountingHandler(**script)
    extra = {"tls_context": tls_context} if tls_context else {}
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **extra)
    controller.start()
    try:
        yield handler, egress.Hop("127.0.0.1", controller.port)
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A STARTTLS server context with a self-signed certificate (egress does not verify it)."""
    folder: Path = tmp_path_factory.mktemp("tls")
    write_self_signed(folder / "cert.pem", folder / "key.pem", hostname="127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def send(hop: egress.Hop, recipient: str = RECIPIENT, **kwargs) -> egress.Outcome:
    return egress.send_via(
        [hop], wire=WIRE, mail_from="a@b.test", recipients=[recipient], **kwargs
    )[recipient]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_consecutive_sends_to_one_hop_share_one_connection(db):
    with smtp_server() as (server, hop):
        routes.set_route(PARTNER, f"{hop.host}:{hop.port}")
        first = egress.send(wire=WIRE, mail_from="a@b.test", recipient=RECIPIENT)
        second = egress.send(wire=WIRE, mail_from="a@b.test", recipient=RECIPIENT)
    assert (first.result, second.result) == (egress.Result.SENT, egress.Result.SENT)
    assert server.connections == 1
    assert [d.connection for d in server.delivered] == [1, 1]
    assert server.rsets == 1  # the probe before the second transaction


def test_without_reuse_every_send_opens_and_quits_a_connection(monkeypatch):
    monkeypatch.setattr(egress, "REUSE", False)
    with smtp_server() as (server, hop):
        outcomes = [send(hop) for _ in range(3)]
    assert {o.result for o in outcomes} == {egress.Result.SENT}
    assert (server.connections, server.quits, server.rsets) == (3, 3, 0)
    assert egress.idle_connections() == 0


def test_different_hops_use_different_connections():
    with smtp_server() as (first, hop1), smtp_server() as (second, hop2):
        outcomes = [send(hop) for hop in (hop1, hop2, hop1, hop2)]
        assert egress.idle_connections() == 2
    assert {o.result for o in outcomes} == {egress.Result.SENT}
    assert (first.connections, second.connections) == (1, 1)
    assert (len(first.delivered), len(second.delivered)) == (2, 2)


def test_session_that_only_saw_5xx_is_reused_but_not_one_that_saw_4xx():
    replies = {"gone": "550 5.1.1 No such user", "busy": "451 4.2.1 Later"}
    with smtp_server(rcpt_replies=replies) as (server, hop):
        assert send(hop, f"gone@{PARTNER}").result is egress.Result.PERMANENT
        assert egress.idle_connections() == 1
        assert send(hop).result is egress.Result.SENT
        assert send(hop, f"busy@{PARTNER}").result is egress.Result.TEMPORARY
        assert egress.idle_connections() == 0  # closed with QUIT, not kept
        assert send(hop).result is egress.Result.SENT
    assert server.connections == 2
    assert server.quits == 1
    assert [d.connection for d in server.delivered] == [1, 2]


def test_server_that_dropped_the_idle_connection_gets_a_new_one_and_the_message_once():
    closed = threading.Event()

    async def hang_up_after_replying(handler, server):
        def close():
            server.transport.close()
            closed.set()

        asyncio.get_running_loop().call_later(0.05, close)  # after the 250 went out

    with smtp_server(on_data=hang_up_after_replying) as (server, hop):
        assert send(hop).result is egress.Result.SENT
        assert closed.wait(5)
        time.sleep(0.1)
        server.on_data = None
        assert send(hop).result is egress.Result.SENT
    assert server.connections == 2
    assert [d.connection for d in server.delivered] == [1, 2]  # each message exactly once


def test_421_to_the_probe_means_a_new_connection():
    with smtp_server(rset_reply="421 4.4.2 Closing idle connection") as (server, hop):
        assert send(hop).result is egress.Result.SENT
        assert send(hop).result is egress.Result.SENT
    assert server.rsets == 1
    assert server.connections == 2
    assert [d.connection for d in server.delivered] == [1, 2]


def test_connection_lost_after_data_is_temporary_and_never_retried():
    async def hang_up_without_replying(handler, server):
        server.transport.close()
        await asyncio.sleep(5)  # cancelled by the lost connection: no reply ever goes out

    with smtp_server(on_data=hang_up_without_replying) as (server, hop):
        outcome = send(hop)
        assert (outcome.result, outcome.status) == (egress.Result.TEMPORARY, "4.4.1")
        assert egress.idle_connections() == 0
        server.on_data = None
        assert send(hop).result is egress.Result.SENT
    # The first message reached the server once (whether it kept it is the usual SMTP doubt);
    # egress did not send it again on a new connection.
    assert server.data_commands == 2
    assert server.connections == 2
    assert server.rsets == 0  # the broken session was never probed, let alone reused


def test_reply_timeout_after_data_is_temporary_and_the_session_is_not_reused():
    async def answer_late(handler, server):
        await asyncio.sleep(0.8)

    with smtp_server(on_data=answer_late) as (server, hop):
        # The final dot's reply is waited for until the attempt's deadline (RFC 5321 4.5.3.2.6).
        outcome = send(hop, timeout=0.3, deadline=time.monotonic() + 0.6)
        assert (outcome.result, outcome.status) == (egress.Result.TEMPORARY, "4.4.2")
        assert egress.idle_connections() == 0
        server.on_data = None
        time.sleep(0.8)  # the late 250 arrives on the old connection, which nobody reads
        assert send(hop).result is egress.Result.SENT
    assert server.data_commands == 2
    assert server.connections == 2


def test_idle_session_is_closed_after_the_idle_bound(monkeypatch):
    monkeypatch.setattr(egress, "IDLE_SECONDS", 0.2)
    with smtp_server() as (server, hop):
        assert send(hop).result is egress.Result.SENT
        assert egress.idle_connections() == 1
        wait_for(lambda: server.quits == 1, "the idle session to be closed with QUIT")
        assert egress.idle_connections() == 0
        assert send(hop).result is egress.Result.SENT
    assert server.connections == 2


def test_expired_session_is_closed_at_checkout(monkeypatch):
    with smtp_server() as (server, hop):
        assert send(hop).result is egress.Result.SENT
        monkeypatch.setattr(egress, "IDLE_SECONDS", 0.0)  # expired now; the reaper sleeps on
        time.sleep(0.01)
        assert send(hop).result is egress.Result.SENT
    assert (server.connections, server.quits, server.rsets) == (2, 1, 0)


def test_session_is_replaced_after_the_maximum_number_of_transactions(monkeypatch):
    monkeypatch.setattr(egress, "MAX_TRANSACTIONS", 2)
    with smtp_server() as (server, hop):
        outcomes = [send(hop) for _ in range(5)]
        assert egress.idle_connections() == 1
    assert {o.result for o in outcomes} == {egress.Result.SENT}
    assert [d.connection for d in server.delivered] == [1, 1, 2, 2, 3]
    assert server.quits == 2


def test_tls_required_hop_reuses_its_tls_session(tls_context):
    with smtp_server(tls_context) as (server, plain_hop):
        hop = egress.Hop(plain_hop.host, plain_hop.port, require_tls=True)
        outcomes = [send(hop) for _ in range(3)]
    assert {o.result for o in outcomes} == {egress.Result.SENT}
    assert server.connections == 1
    assert [d.tls for d in server.delivered] == [True, True, True]


def test_opportunistic_tls_session_stays_tls(tls_context):
    with smtp_server(tls_context) as (server, hop):
        assert send(hop).result is egress.Result.SENT
        assert send(hop).result is egress.Result.SENT
    assert server.connections == 1
    assert [d.tls for d in server.delivered] == [True, True]


def test_tls_required_hop_never_gets_a_cached_plaintext_session():
    with smtp_server() as (server, hop):  # no STARTTLS
        assert send(hop).result is egress.Result.SENT
        assert egress.idle_connections() == 1
        strict = egress.Hop(hop.host, hop.port, require_tls=True)
        refused = send(strict)
        assert (refused.result, refused.status) == (egress.Result.TEMPORARY, "4.7.10")
        assert send(hop).result is egress.Result.SENT  # the plaintext session, still cached
    assert len(server.delivered) == 2
    assert server.connections == 2  # the second only to find STARTTLS missing
    assert [d.connection for d in server.delivered] == [1, 1]


def test_forked_child_opens_its_own_connection_and_leaves_the_parents_alone():
    with smtp_server() as (server, hop):
        assert send(hop).result is egress.Result.SENT
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            code = 1
            try:
                inherited = egress.idle_connections()
                if send(hop).result is egress.Result.SENT and inherited == 0:
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert server.connections == 2
        assert send(hop).result is egress.Result.SENT  # the parent's session still works
    assert server.connections == 2
    assert [d.connection for d in server.delivered] == [1, 2, 1]
    assert server.rsets == 1  # the parent's probe; the child never probed the parent's session


EXITING_SENDER = """
import sys, django
django.setup()
from hisp import egress
hop = egress.Hop("127.0.0.1", int(sys.argv[1]))
outcome = egress.send_via([hop], wire=b"x\\r\\n", mail_from="", recipients=["doc@example.net"])
assert outcome["doc@example.net"].result is egress.Result.SENT, outcome
assert egress.idle_connections() == 1
"""


def test_process_exit_closes_idle_sessions_with_quit():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "HISP_DATA_DIR": str(settings.DATA_DIR),
        "SECRET_KEY": settings.SECRET_KEY,
        "HISP_KEY_ENCRYPTION_KEY": settings.HISP_KEY_ENCRYPTION_KEY,
    }
    root = Path(__file__).resolve().parents[3]
    with smtp_server() as (server, hop):
        subprocess.run(
            [sys.executable, "-c", EXITING_SENDER, str(hop.port)],
            env=env,
            cwd=root,
            check=True,
            timeout=60,
            capture_output=True,
        )
        wait_for(lambda: server.quits == 1, "the QUIT sent at exit")
    assert (server.connections, len(server.delivered)) == (1, 1)


def test_concurrent_senders_never_share_a_session():
    failures: list[egress.Outcome] = []

    def sender(hop: egress.Hop) -> None:
        for _ in range(5):
            outcome = send(hop)
            if outcome.result is not egress.Result.SENT:
                failures.append(outcome)

    with smtp_server() as (server, hop):
        threads = [threading.Thread(target=sender, args=(hop,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert egress.idle_connections() == server.connections
    assert failures == []
    assert len(server.delivered) == 30
    assert server.connections <= 6
