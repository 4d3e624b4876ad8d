"""``manage.py runsmtp`` told to stop (SIGTERM) while sessions are open, one of them committing
its DATA: that one still gets its 250 (its message is stored, and a sender cut off before the
reply would send it again), every other session gets a 421, a message whose bytes were still
arriving is not stored, and the process exits by itself."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import threading
import time

import psycopg
import pytest
from django.db import connection

from hisp.models import Message
from tests.hisp.mail import processes
from tests.hisp.mail.test_ingress import MESSAGE
from tests.support.services import free_port, port_open, redis_url

pytestmark = pytest.mark.slow


def _database() -> psycopg.Connection:
    s = connection.settings_dict
    return psycopg.connect(dbname=s["NAME"], user=s["USER"], password=s["PASSWORD"] or None,
                           host=s["HOST"] or None, port=s["PORT"] or None, autocommit=True)


def _storing(watcher: psycopg.Connection) -> bool:
    """Whether a message's INSERT waits on the lock the test holds."""
    row = watcher.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query LIKE %s",
        [f"%INSERT INTO {connection.ops.quote_name(Message._meta.db_table)}%"],
    ).fetchone()
    return bool(row and row[0])


class RawSession:
    """A client that reads whatever the server says, to the end of the connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.reply()  # the greeting

    def reply(self) -> bytes:
        lines = []
        while True:
            line = self.file.readline()
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return b"".join(lines)

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def rest(self) -> bytes:
        try:
            return self.file.read()
        except ConnectionResetError:  # a reset after the server's last words: they were read
            return b""
        finally:
            self.sock.close()


def _commit_in_background(port: int, rcpt: str, outcome: dict[str, object]) -> threading.Thread:
    def send() -> None:
        client = smtplib.SMTP("127.0.0.1", port, timeout=60)
        try:
            client.ehlo("partner.example.net")
            client.mail("doc@partner.example.net")
            client.rcpt(rcpt)
            outcome["data"] = client.data(MESSAGE)[0]
            outcome["next"] = client.noop()[0]  # the listener is stopping: 421
        except (OSError, smtplib.SMTPException) as exc:
            outcome.setdefault("data", exc)
        finally:
            client.close()

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_sigterm_answers_the_commit_in_flight_and_tells_the_other_sessions_421(
    transactional_db, bob, tmp_path
):
    processes.database_url()  # PostgreSQL only (the listener is another process)
    env = processes.environment(redis_url(), processes.queue_name())
    port = free_port()
    smtp = processes.smtp(env, tmp_path, port)
    idle = RawSession(port)
    idle.command(b"EHLO partner.example.net")
    sending = RawSession(port)
    sending.command(b"EHLO partner.example.net")
    sending.command(b"MAIL FROM:<doc@partner.example.net>")
    sending.command(f"RCPT TO:<{bob.address}>".encode())
    assert sending.command(b"DATA").startswith(b"354")
    sending.sock.sendall(b"Subject: half a message\r\n\r\nthe rest never comes")
    # The committing session: its INSERT waits on a lock the test holds until after the stop.
    holder, watcher = _database(), _database()
    holder.autocommit = False
    holder.execute(f"LOCK TABLE {Message._meta.db_table} IN ACCESS EXCLUSIVE MODE")
    outcome: dict[str, object] = {}
    committing = _commit_in_background(port, bob.address, outcome)
    try:
        processes.wait_for(lambda: _storing(watcher), timeout=30,
                           what="the DATA handler to wait on the lock")
        assert smtp.proc is not None
        os.killpg(smtp.proc.pid, signal.SIGTERM)
        processes.wait_for(lambda: not port_open("127.0.0.1", port), timeout=10,
                           what="the listener to stop taking connections")
        time.sleep(0.5)  # the handler is still waiting: the stop must wait for it
    finally:
        holder.rollback()  # the INSERT goes ahead and commits
        holder.close()
    committing.join(timeout=60)
    stopped = time.monotonic()
    smtp.proc.wait(timeout=30)
    watcher.close()
    print(f"runsmtp exited {time.monotonic() - stopped:.1f}s after the commit went ahead")
    assert outcome == {"data": 250, "next": 421}
    assert smtp.proc.returncode == 0, smtp.tail()
    assert idle.rest().startswith(b"421 4.3.2")
    assert b"421 4.3.2" in sending.rest()
    stored = Message.objects.filter(direction=Message.Direction.INBOUND)
    assert stored.count() == 1  # the committed one; nothing of the half-sent one
    assert b"half a message" not in bytes(stored.get().raw)
