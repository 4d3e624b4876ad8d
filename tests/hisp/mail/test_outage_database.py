"""PostgreSQL gone in the middle of a burst, with real processes: ``manage.py runsmtp`` and a
Celery worker (with its beat) reach the database through a TCP relay that the test cuts, which
to them is a database that dropped every connection (as on a restart) and then refuses new ones
(as while it is down). Meanwhile the listener answers DATA ``451 4.3.0`` promptly, never 250
and never a 5xx; once the database is back both processes reconnect by themselves (no restart),
the leases held when it went are swept, and every message answered 250 is delivered exactly
once."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import threading
import time

import pytest
from django.db import connection
from django.db.models import Count

from hisp.models import Message
from tests.hisp.mail import processes
from tests.hisp.mail.test_ingress import MESSAGE
from tests.hisp.mail.test_worker import (
    FAST_SWEEP,
    _broker,
    _messages,
    _settled,
    live_world,  # noqa: F401 - the fixture
)
from tests.support.services import free_port

pytestmark = pytest.mark.slow


class Relay:
    """A TCP relay to PostgreSQL that can be cut: every relayed connection is dropped and the
    port refuses connections until :meth:`restore`. Or it can lose one reply: the reply to the
    next statement whose text holds given bytes, after PostgreSQL has run (and committed) it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._lose_reply_to: bytes | None = None
        self.lost_replies = 0
        self._then_cut = False

    def lose_reply_to(self, statement: bytes, *, then_cut: bool = False) -> None:
        self._lose_reply_to = statement
        self._then_cut = then_cut

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux)
            listener.close()
        with self._lock:
            dropped, self._open = self._open, set()
        for sock in dropped:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    restore = start

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            asked = threading.Event()  # this connection sent the statement whose reply is lost
            threading.Thread(target=self._pump, args=(client, upstream, asked, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, asked, True),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, asked: threading.Event,
              replies: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if replies and asked.is_set():
                    self.lost_replies += 1
                    if self._then_cut:
                        self.cut()
                    break  # the reply goes nowhere, and the connection with it
                if not replies and self._lose_reply_to and self._lose_reply_to in data:
                    self._lose_reply_to = None
                    asked.set()
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _relayed_url(relay: Relay) -> str:
    direct = processes.database_url()
    head, _, rest = direct.rpartition("@")
    return f"{head}@127.0.0.1:{relay.port}/{rest.split('/', 1)[1]}"


def _offer(port: int, raw: bytes, rcpt: str) -> tuple[int, float]:
    """One message in its own session: the first reply that is not a success (else DATA's)
    and how long the command took to be answered."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("partner.example.net")
        client.mail("doc@partner.example.net")
        began = time.monotonic()
        code, _ = client.rcpt(rcpt)
        if code != 250:
            return code, time.monotonic() - began
        began = time.monotonic()
        try:
            code, _ = client.data(raw)
        except smtplib.SMTPDataError as exc:  # DATA itself refused
            code = exc.smtp_code
        return code, time.monotonic() - began


class Burst:
    """Offers messages one after another, each in its own session, until told to stop."""

    def __init__(self, port: int, messages: list[tuple[str, bytes]], rcpt: str) -> None:
        self.port, self.messages, self.rcpt = port, messages, rcpt
        self.replies: list[tuple[str, int, float, float]] = []  # id, code, took, when
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        for message_id, raw in self.messages:
            if self.stop.is_set():
                return
            code, took = _offer(self.port, raw, self.rcpt)
            self.replies.append((message_id, code, took, time.monotonic()))
            time.sleep(0.1 if code == 250 else 0.25)  # a steady flow; after a 4xx, a pause

    def accepted_since(self, moment: float) -> int:
        return sum(1 for _, code, _, when in self.replies if code == 250 and when > moment)


def _claimed_now() -> int:
    return Message.objects.filter(state=Message.State.PROCESSING).count()


def test_a_database_outage_mid_burst_gets_451s_and_then_recovers_without_restarts(
    live_world, tmp_path  # noqa: F811
):
    world = live_world
    params = connection.settings_dict
    relay = Relay(params.get("HOST") or "127.0.0.1", int(params.get("PORT") or 5432))
    relay.start()
    queue = processes.queue_name()
    env = processes.environment(_broker(14), queue, DATABASE_URL=_relayed_url(relay),
                                **FAST_SWEEP)
    port = free_port()
    smtp = processes.smtp(env, tmp_path, port)
    worker = processes.worker(env, tmp_path, queue)
    burst = Burst(port, _messages(world, 100, "pg-outage"), world.alice.address)
    burst.thread.start()
    try:
        # Mid-burst, ideally while the worker holds a claim (a lease the sweeper must return).
        deadline = time.monotonic() + 3
        while not _claimed_now() and time.monotonic() < deadline:
            time.sleep(0.005)
        relay.cut()
        cut = time.monotonic()
        held = _claimed_now()
        time.sleep(3)  # the worker's tasks and sweeps, and the listener's DATA, fail meanwhile
        relay.restore()
        restored = time.monotonic()
        processes.wait_for(lambda: burst.accepted_since(restored) >= 3, timeout=60,
                           what=f"the listener to accept mail again: {burst.replies}\n{smtp.tail()}")
        burst.stop.set()
        burst.thread.join(timeout=60)
        accepted = [m for m, code, _, _ in burst.replies if code == 250]
        processes.wait_for(lambda: _settled(len(accepted)), timeout=120,
                           what=f"every accepted message delivered\n{worker.tail()}")
        delivered = time.monotonic() - restored
    finally:
        burst.stop.set()
        worker.stop()
        smtp.stop()
        relay.cut()
    # Replies to DATA begun while the database was cut (one begun just before may still be
    # answered 250 just after).
    down = [(code, took) for _, code, took, when in burst.replies
            if cut < when - took and when < restored]
    first_250 = min(when for _, code, _, when in burst.replies
                    if code == 250 and when > restored) - restored
    print(f"database outage: {held} claim(s) held at the cut; {len(down)} DATA answered "
          f"{sorted({c for c, _ in down})} within {max(t for _, t in down):.2f}s; first 250 "
          f"{first_250:.2f}s after it came back; all delivered {delivered:.1f}s after")
    assert {code for _, code, _, _ in burst.replies} == {250, 451}  # never a 5xx, never a hang
    assert down and all(code == 451 and took < 5 for code, took in down), down
    inbound = Message.objects.filter(direction=Message.Direction.INBOUND,
                                     kind=Message.Kind.REGULAR, peer__startswith="127.0.0.1")
    assert sorted(inbound.values_list("message_id", flat=True)) == sorted(accepted), (
        list(inbound.exclude(message_id__in=accepted).values("pk", "state", "raw", "detail",
                                                             "created_at", "abandoned")),
        [(m, c) for m, c, _, _ in burst.replies if c != 250], cut, restored,
    )
    per_message = inbound.annotate(
        n_entries=Count("entries", distinct=True), n_mdns=Count("reports", distinct=True)
    )
    assert {(m.state, m.n_entries, m.n_mdns) for m in per_message} == {
        (Message.State.DELIVERED, 1, 1)
    }


INSERT_MESSAGE = f"INSERT INTO {connection.ops.quote_name(Message._meta.db_table)}".encode()


def test_a_commit_whose_reply_is_lost_is_answered_250_once_found_stored(
    transactional_db, alice, tmp_path
):
    """PostgreSQL commits the received message and the connection drops before its reply
    reaches the listener (a restart or a network cut at that moment): the message is stored,
    so the sender must get 250; a 451 would make it send a second copy."""
    params = connection.settings_dict
    relay = Relay(params.get("HOST") or "127.0.0.1", int(params.get("PORT") or 5432))
    relay.start()
    env = processes.environment(_broker(14), processes.queue_name(),
                                DATABASE_URL=_relayed_url(relay))
    port = free_port()
    smtp = processes.smtp(env, tmp_path, port)
    try:
        relay.lose_reply_to(INSERT_MESSAGE)
        code, took = _offer(port, MESSAGE, alice.address)
        print(f"lost commit reply: answered {code} in {took:.2f}s")
    finally:
        smtp.stop()
        relay.cut()
    assert relay.lost_replies == 1
    assert code == 250, smtp.tail()
    assert Message.objects.filter(direction=Message.Direction.INBOUND).count() == 1


def test_an_unconfirmed_commit_while_the_database_stays_down_gets_451_in_bounded_time(
    transactional_db, alice, tmp_path
):
    """The same lost reply, and the database unreachable from then on: whether the message
    was stored cannot be learnt, and the client gets its 451 once HISP_SMTP_DB_TIMEOUT has
    passed, not a session held for ever (the copy its retry makes is the residual risk that
    docs/mail-flow.md names)."""
    params = connection.settings_dict
    relay = Relay(params.get("HOST") or "127.0.0.1", int(params.get("PORT") or 5432))
    relay.start()
    env = processes.environment(_broker(14), processes.queue_name(),
                                DATABASE_URL=_relayed_url(relay), HISP_SMTP_DB_TIMEOUT="2s")
    port = free_port()
    smtp = processes.smtp(env, tmp_path, port)
    try:
        relay.lose_reply_to(INSERT_MESSAGE, then_cut=True)
        code, took = _offer(port, MESSAGE, alice.address)
    finally:
        smtp.stop()
        relay.cut()
    assert relay.lost_replies == 1
    assert code == 451
    assert 1 < took < 6  # it looked again for a while, within the timeout
