"""A database that hangs under the SMTP listener (here: a lock held on the message table)
turns into 451 for the client within HISP_SMTP_DB_TIMEOUT, not a session held for ever; and a
stopped listener leaves no database session behind."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from django.db import connection

from hisp.models import Message
from hisp.smtp import server, threads
from tests.hisp.mail.conftest import _start
from tests.hisp.mail.test_ingress import MESSAGE


def listening_with_a_short_db_timeout(settings, make) -> Iterator[object]:
    """The listener ``make`` builds, its database statements limited to one second."""
    if connection.vendor != "postgresql":
        pytest.skip("statement_timeout is PostgreSQL's")
    settings.HISP_SMTP_DB_TIMEOUT = timedelta(seconds=1)
    threads.shutdown()  # new threads, new connections: they take the setting above
    try:
        yield from _start(make)
    finally:
        threads.shutdown()  # later tests get connections with the default again


@pytest.fixture
def listener(transactional_db: None, settings) -> Iterator[object]:
    yield from listening_with_a_short_db_timeout(settings, server.backbone)


def _lock_messages() -> psycopg.Connection:
    s = connection.settings_dict
    holder = psycopg.connect(dbname=s["NAME"], user=s["USER"], password=s["PASSWORD"] or None,
                             host=s["HOST"] or None, port=s["PORT"] or None)
    holder.execute(f"LOCK TABLE {Message._meta.db_table} IN ACCESS EXCLUSIVE MODE")
    return holder


def _send(listener, rcpt: str) -> tuple[int, float]:
    with smtplib.SMTP("127.0.0.1", listener.port, timeout=30) as client:
        client.ehlo("partner.example.net")
        client.mail("doc@partner.example.net")
        client.rcpt(rcpt)
        began = time.monotonic()
        code, _ = client.data(MESSAGE)
        return code, time.monotonic() - began


def test_a_hanging_database_gets_451_within_the_timeout_and_stores_nothing(listener, bob):
    holder = _lock_messages()
    try:
        code, took = _send(listener, bob.address)
    finally:
        holder.rollback()
        holder.close()
    assert code == 451
    assert took < 10
    assert not Message.objects.exists()
    # The database is back: the same session pool takes mail again.
    code, _ = _send(listener, bob.address)
    assert code == 250
    assert Message.objects.count() == 1


def _sessions_but_ours() -> set[int]:
    """The backends connected to this test database, other than this thread's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {pid for (pid,) in cursor.fetchall()}


def test_a_stopped_listener_closes_its_threads_database_sessions(transactional_db, settings, bob):
    """Stopping the listener left its threads' connections to the garbage collector, which
    cannot close one that something still references: here the traceback of the logged 451
    (any log handler that keeps records does the same). The session stayed open until the
    process ended, and pytest could not drop the test database ("being accessed by other
    users")."""
    before = _sessions_but_ours()
    for listener in listening_with_a_short_db_timeout(settings, server.backbone):
        holder = _lock_messages()
        try:
            code, _ = _send(listener, bob.address)
        finally:
            holder.rollback()
            holder.close()
        assert code == 451
        opened = _sessions_but_ours() - before
        assert opened  # the listener's thread holds its connection while it runs
    # Stopped (the generator's end): a closed connection's backend exits soon after; wait
    # for that, bounded, rather than assert how soon.
    deadline = time.monotonic() + 10
    while (left := opened & _sessions_but_ours()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left
