"""The submission listener's AUTH when its own side fails (the database hanging, the cache
away), over real sockets: the client gets RFC 4954's ``454 4.7.0`` and keeps its session, and
the log says what failed without any credential. It ended in the session error handler's
``421 4.3.0 Local error; closing connection`` instead. Such an attempt no longer counts towards
the guessing limits, and a successful AUTH is logged. MAIL's sender check, failing the same
way, is a ``451 4.3.0`` (as the backbone's RCPT lookup) with the session kept."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection

from hisp.models import AddressGrant
from hisp.smtp import server
from hisp.smtp.credentials import FAILURE_LIMIT
from tests.hisp.mail.test_smtp_db_timeout import listening_with_a_short_db_timeout
from tests.hisp.mail.test_smtp_hostile_clients import (  # noqa: F401 (redis_cache: a fixture)
    _plain,
    _say,
    _session,
    redis_cache,
)
from tests.hisp.mail.test_submission import PASSWORD
from tests.support.services import free_port

AUTH_TEMPORARY = b"454 4.7.0 Temporary authentication failure"  # RFC 4954 section 6


@pytest.fixture
def listener(transactional_db: None, settings) -> Iterator[object]:
    cache.clear()  # the AUTH failure counters live in the cache
    yield from listening_with_a_short_db_timeout(settings, server.submission)


def _lock(table: str) -> psycopg.Connection:
    s = connection.settings_dict
    holder = psycopg.connect(dbname=s["NAME"], user=s["USER"], password=s["PASSWORD"] or None,
                             host=s["HOST"] or None, port=s["PORT"] or None)
    holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return holder


def _auth(sock, login: str) -> bytes:
    return _say(sock, b"AUTH PLAIN " + _plain(login, PASSWORD) + b"\r\n")


def test_auth_while_the_database_hangs_is_454_and_the_session_goes_on(listener, alice, caplog):
    caplog.set_level(logging.INFO)
    sock = _session(listener)
    try:
        holder = _lock(get_user_model()._meta.db_table)
        try:
            assert _auth(sock, alice.address).startswith(AUTH_TEMPORARY)
        finally:
            holder.rollback()
            holder.close()
        assert _auth(sock, alice.address).startswith(b"235")  # same session, database back
    finally:
        sock.close()
    assert "submission AUTH from 127.0.0.1 could not be checked" in caplog.text
    assert PASSWORD not in caplog.text
    assert _plain(alice.address, PASSWORD).decode() not in caplog.text


def test_auth_while_the_cache_is_away_is_454(listener, alice, settings, caplog):
    """The guessing counters live in the shared cache (Redis in production)."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        }
    }
    caplog.set_level(logging.INFO)
    sock = _session(listener)
    try:
        assert _auth(sock, alice.address).startswith(AUTH_TEMPORARY)
        assert _say(sock, b"NOOP\r\n").startswith(b"250")  # not closed
    finally:
        sock.close()
    assert PASSWORD not in caplog.text


@pytest.mark.usefixtures("redis_cache")  # the counters where production keeps them
def test_attempts_the_database_could_not_check_do_not_lock_the_account_out(listener, alice):
    """Each AUTH is counted before its password is checked; one that could not be checked
    stayed counted, so a mail client retrying through an outage was told "too many failed
    attempts" (454) for 15 minutes after it, with the right password."""
    holder = _lock(get_user_model()._meta.db_table)
    try:
        for _ in range(FAILURE_LIMIT + 1):
            sock = _session(listener)
            try:
                assert _auth(sock, alice.address).startswith(AUTH_TEMPORARY)
            finally:
                sock.close()
    finally:
        holder.rollback()
        holder.close()
    sock = _session(listener)
    try:
        assert _auth(sock, alice.address).startswith(b"235 ")
    finally:
        sock.close()


def test_a_successful_auth_is_logged_by_user_id_without_the_password(listener, alice, caplog):
    """An operator sees who signed in from where (the failures were logged, the successes not)."""
    caplog.set_level(logging.INFO, logger="hisp.smtp.submission")
    sock = _session(listener)
    try:
        assert _auth(sock, alice.address).startswith(b"235")
    finally:
        sock.close()
    user = get_user_model().objects.get(username=alice.address)
    assert f"submission AUTH succeeded for user {user.pk} from 127.0.0.1" in caplog.text
    assert PASSWORD not in caplog.text


def test_mail_while_the_database_hangs_is_451_and_the_session_goes_on(listener, alice, caplog):
    """MAIL FROM checks the sender against the user's address grants; when that check itself
    failed the session error handler answered ``421`` and closed a signed-in session. A
    ``451 4.3.0`` is what a client retries, as the backbone answers a failed RCPT lookup."""
    caplog.set_level(logging.INFO)
    mail = f"MAIL FROM:<{alice.address}>\r\n".encode()
    sock = _session(listener)
    try:
        assert _auth(sock, alice.address).startswith(b"235")
        holder = _lock(AddressGrant._meta.db_table)
        try:
            assert _say(sock, mail).startswith(b"451 4.3.0 ")
        finally:
            holder.rollback()
            holder.close()
        assert _say(sock, mail).startswith(b"250 ")  # same session, database back
    finally:
        sock.close()
    [record] = [r for r in caplog.records if "could not check the sender" in r.getMessage()]
    assert record.exc_info is not None  # the operator sees what failed
    assert "SMTP session error" not in caplog.text
    assert PASSWORD not in caplog.text
    assert _plain(alice.address, PASSWORD).decode() not in caplog.text
