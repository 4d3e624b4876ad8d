"""The AUTH commands one SMTP session may send are a setting (HISP_SMTP_AUTH_COMMAND_LIMIT),
not the constant 5 it was: raised, a session gets that many; lowered, fewer; and a value that
would turn AUTH off (0) or is no number stops the start naming the variable. Over real sockets
on the submission listener."""

from __future__ import annotations

from django.conf import settings as django_settings
from django.core.cache import cache

from hisp.smtp import protocol, server
from tests.hisp.mail.conftest import _start
from tests.hisp.mail.test_smtp_hostile_clients import _plain, _reply, _say, _session
from tests.hisp.mail.test_smtp_review3_limits import start_outcomes

OVER_LIMIT = b"421 4.7.0 AUTH sent too many times"


def _guesses(controller, count: int) -> list[bytes]:
    """The replies to ``count`` AUTH PLAIN guesses in one session, then to one more."""
    cache.clear()  # the AUTH failure counters live in the cache
    sock = _session(controller)
    try:
        replies = []
        for n in range(count + 1):
            login = f"nobody{n}@hospital.example.org"  # a new account each time
            replies.append(_say(sock, b"AUTH PLAIN " + _plain(login, "wrong") + b"\r\n"))
        replies.append(_reply(sock))  # b"" once the listener has closed the session
        return replies
    finally:
        sock.close()


def test_the_default_is_the_protocol_modules_value():
    assert django_settings.HISP_SMTP_AUTH_COMMAND_LIMIT == protocol.AUTH_COMMAND_LIMIT == 5


def test_a_raised_limit_lets_a_session_send_that_many_auth_commands(settings, transactional_db):
    settings.HISP_SMTP_AUTH_COMMAND_LIMIT = 7
    for controller in _start(server.submission):
        replies = _guesses(controller, 7)
    # Refused by the credentials (535, then 454 once five accounts failed from this address),
    # never by the session limit until the eighth.
    assert all(not reply.startswith(b"421") for reply in replies[:7]), replies
    assert replies[7:] == [OVER_LIMIT, b""]


def test_a_lowered_limit_closes_the_session_sooner(settings, transactional_db):
    settings.HISP_SMTP_AUTH_COMMAND_LIMIT = 2
    for controller in _start(server.submission):
        replies = _guesses(controller, 2)
    assert [reply[:3] for reply in replies[:2]] == [b"535", b"535"]
    assert replies[2:] == [OVER_LIMIT, b""]


BAD = [("0", "at least 1"), ("-1", "at least 1"), ("five", "whole number")]


def test_a_bad_auth_limit_stops_the_start_naming_the_variable(tmp_path):
    cases = [f"HISP_SMTP_AUTH_COMMAND_LIMIT={value}" for value, _ in BAD] + [
        "HISP_SMTP_AUTH_COMMAND_LIMIT=12"
    ]
    outcomes = start_outcomes(tmp_path, cases, unset="HISP_SMTP_")
    for (value, words), outcome in zip(BAD, outcomes, strict=False):
        assert outcome.startswith("ImproperlyConfigured: HISP_SMTP_AUTH_COMMAND_LIMIT"), value
        assert words in outcome, (value, outcome)
    assert outcomes[-1] == "started"
