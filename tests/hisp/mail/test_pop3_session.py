"""The POP3S listener's sessions: implicit TLS, logins (the submission port's credentials and
limits), states, line and command limits, the idle timeout."""

from __future__ import annotations

import base64
import poplib
import socket
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import Address, AddressGrant, AppPassword
from hisp.smtp.credentials import app_password_hash
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.pop3client import (  # noqa: F401 (pop3_fixture: the pop3 fixture)
    PASSWORD,
    Raw,
    client,
    deliver,
    logged_in,
    pop3_fixture,
    start,
)

AUTH_FAILED = b"-ERR [AUTH] Authentication failed"


def _plain(authzid: str, login: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{login}\0{password}".encode()).decode()


def _failed_login(listener, login: str, password: str) -> bytes:
    pop = client(listener)
    pop.user(login)
    with pytest.raises(poplib.error_proto) as failure:
        pop.pass_(password)
    pop.close()
    return failure.value.args[0]


# --- TLS ------------------------------------------------------------------------------------
def test_the_greeting_comes_only_over_tls(pop3):
    pop = client(pop3)
    assert pop.getwelcome().startswith(b"+OK ")
    assert pop.sock.version() in ("TLSv1.2", "TLSv1.3")
    pop.quit()


def test_a_plaintext_client_gets_nothing(pop3, alice):
    with socket.create_connection(("127.0.0.1", pop3.port), timeout=5) as plain:
        plain.sendall(f"USER {alice.address}\r\nPASS {PASSWORD}\r\n".encode())
        received = b""
        try:
            while chunk := plain.recv(4096):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert b"+OK" not in received and b"-ERR" not in received


def test_capa_lists_the_extensions_and_no_stls(pop3):
    pop = client(pop3)
    capabilities = pop.capa()
    assert {"TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"} <= set(
        capabilities
    )
    assert capabilities["SASL"] == ["PLAIN"]
    assert "STLS" not in capabilities
    pop.quit()


# --- logins ---------------------------------------------------------------------------------
def test_user_and_pass_with_the_webmail_password_open_the_inbox(pop3, alice):
    deliver(alice, b"Subject: one\r\n\r\nbody\r\n")
    pop = logged_in(pop3, alice.address)
    assert pop.stat()[0] == 1
    assert pop.quit().startswith(b"+OK")


def test_the_login_is_the_address_in_any_case(pop3, alice):
    pop = logged_in(pop3, f"  ALICE@{HOSTED.upper()}")
    assert pop.stat() == (0, 0)
    pop.quit()


def test_auth_plain_with_an_initial_response_logs_in(pop3, alice):
    pop = client(pop3)
    assert pop._shortcmd("AUTH PLAIN " + _plain("", alice.address, PASSWORD)).startswith(b"+OK")
    assert pop.stat() == (0, 0)
    pop.quit()


def test_auth_plain_after_the_challenge_logs_in_and_star_cancels(pop3, alice):
    raw = Raw(pop3)
    assert raw.command("AUTH PLAIN") == b"+ \r\n"
    assert raw.command("*").startswith(b"-ERR [AUTH]")
    assert raw.command("AUTH PLAIN") == b"+ \r\n"
    assert raw.command(_plain("", alice.address, PASSWORD)).startswith(b"+OK")
    assert raw.command("STAT") == b"+OK 0 0\r\n"
    raw.close()


def test_auth_plain_that_is_not_base64_or_not_three_parts_is_refused(pop3, alice):
    raw = Raw(pop3)
    assert raw.command("AUTH PLAIN %%%").startswith(b"-ERR [AUTH] Malformed")
    only_two = base64.b64encode(b"alice\0secret").decode()
    assert raw.command(f"AUTH PLAIN {only_two}").startswith(b"-ERR [AUTH] Malformed")
    assert raw.command("AUTH LOGIN").startswith(b"-ERR [AUTH] Unsupported")
    assert raw.command("STAT") == b"-ERR Command not valid in this state\r\n"
    raw.close()


def test_a_bad_password_is_an_auth_error(pop3, alice):
    assert _failed_login(pop3, alice.address, "wrong password") == AUTH_FAILED


def test_failures_are_throttled_across_sessions_even_for_the_right_password(pop3, alice):
    for _ in range(5):  # hisp.smtp.credentials.FAILURE_LIMIT, counted across sessions
        assert _failed_login(pop3, alice.address, "wrong password") == AUTH_FAILED
    reply = _failed_login(pop3, alice.address, PASSWORD)
    assert reply.startswith(b"-ERR [SYS/TEMP]")


def test_a_session_gets_three_login_attempts_then_is_closed(pop3, alice):
    raw = Raw(pop3)
    for _ in range(2):
        raw.command(f"USER {alice.address}")
        assert raw.command("PASS nope").startswith(AUTH_FAILED)
    raw.command(f"USER {alice.address}")
    assert raw.command("PASS nope").startswith(AUTH_FAILED)
    assert raw.line().startswith(b"-ERR [AUTH] Too many failed logins")
    assert raw.line() == b""  # closed
    raw.close()


def test_a_second_factor_user_needs_an_app_password(pop3, alice):
    user = get_user_model().objects.get(username=alice.address)
    TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    AppPassword.objects.create(
        user=user, name="laptop", password_hash=app_password_hash("app-pass-123")
    )
    assert _failed_login(pop3, alice.address, PASSWORD) == AUTH_FAILED
    pop = logged_in(pop3, alice.address, "app-pass-123")
    assert pop.stat() == (0, 0)
    pop.quit()


def test_an_app_password_from_before_selectors_works_too(pop3, alice):
    user = get_user_model().objects.get(username=alice.address)
    AppPassword.objects.create(user=user, name="old", password_hash=make_password("old-app-pass"))
    pop = logged_in(pop3, alice.address, "old-app-pass")
    pop.quit()


def test_no_grant_reads_exactly_like_a_bad_password_and_shows_nothing(pop3, alice):
    deliver(alice, b"Subject: private\r\n\r\nbody\r\n")
    get_user_model().objects.create_user(username="charlie", password=PASSWORD)
    bad_password = _failed_login(pop3, alice.address, "wrong password")
    # charlie's own, correct password, asking for alice's mailbox (as authzid) or naming no
    # mailbox at all (his login is no address): the same reply, nothing opened.
    raw = Raw(pop3)
    as_alice = raw.command("AUTH PLAIN " + _plain(alice.address, "charlie", PASSWORD))
    assert raw.command("STAT").startswith(b"-ERR Command not valid")
    raw.close()
    no_mailbox = _failed_login(pop3, "charlie", PASSWORD)
    assert as_alice.rstrip(b"\r\n") == bad_password == no_mailbox == AUTH_FAILED


def test_a_suspended_address_or_an_inactive_user_gets_nothing(pop3, alice):
    deliver(alice, b"Subject: one\r\n\r\nbody\r\n")
    Address.objects.filter(pk=alice.pk).update(status=Address.Status.SUSPENDED)
    assert _failed_login(pop3, alice.address, PASSWORD) == AUTH_FAILED
    Address.objects.filter(pk=alice.pk).update(status=Address.Status.ACTIVE)
    get_user_model().objects.filter(username=alice.address).update(is_active=False)
    assert _failed_login(pop3, alice.address, PASSWORD) == AUTH_FAILED


def test_a_delegate_names_the_mailbox_as_the_authorization_identity(pop3, alice):
    deliver(alice, b"Subject: shared\r\n\r\nbody\r\n")
    bob = get_user_model().objects.create_user(username=f"bob@{HOSTED}", password="bob password")
    AddressGrant.objects.create(user=bob, address=alice, role=AddressGrant.Role.READ)
    pop = client(pop3)
    assert pop._shortcmd(
        "AUTH PLAIN " + _plain(alice.address, bob.username, "bob password")
    ).startswith(b"+OK")
    assert pop.stat()[0] == 1
    pop.quit()


# --- states and malformed input -------------------------------------------------------------
def test_commands_in_the_wrong_state_and_junk_get_err_and_the_session_goes_on(pop3, alice):
    raw = Raw(pop3)
    for command in ("STAT", "LIST", "RETR 1", "DELE 1", "RSET", "NOOP", "TOP 1 1", "UIDL"):
        assert raw.command(command) == b"-ERR Command not valid in this state\r\n", command
    assert raw.command("PASS secret") == b"-ERR USER first\r\n"
    assert raw.command("HELO there") == b"-ERR Unknown command\r\n"
    assert raw.command("\x00\x1b[2J") == b"-ERR Unknown command\r\n"
    assert raw.command("USER") == b"-ERR USER needs a name\r\n"
    assert raw.command(f"USER {alice.address}").startswith(b"+OK")
    assert raw.command(f"PASS {PASSWORD}").startswith(b"+OK")
    for command in ("USER x", "PASS y", "AUTH PLAIN"):
        assert raw.command(command) == b"-ERR Command not valid in this state\r\n", command
    for command in ("RETR", "RETR 0", "RETR 1", "RETR -1", "RETR x", "LIST 99", "TOP 1", "DELE 1"):
        assert raw.command(command).startswith(b"-ERR"), command
    assert raw.command("NOOP") == b"+OK\r\n"
    raw.close()


def test_a_command_line_over_255_octets_is_refused_whole(pop3, alice):
    raw = Raw(pop3)
    raw.send(b"NOOP " + b"x" * 300 + b"\r\n")
    assert raw.line() == b"-ERR Line too long\r\n"
    raw.send(b"USER " + b"y" * 10_000 + b"\r\n")  # read in many pieces; its tail is no command
    assert raw.line() == b"-ERR Line too long\r\n"
    assert raw.command("CAPA").startswith(b"+OK")
    raw.until_dot()
    raw.command(f"USER {alice.address}")
    assert raw.command(f"PASS {PASSWORD}").startswith(b"+OK")
    raw.close()


def test_pipelined_commands_are_answered_in_order(pop3, alice):
    raw = Raw(pop3)
    raw.send(f"USER {alice.address}\r\nPASS {PASSWORD}\r\nSTAT\r\nNOOP\r\n".encode())
    assert raw.line().startswith(b"+OK")
    assert raw.line().startswith(b"+OK Maildrop has 0")
    assert raw.line() == b"+OK 0 0\r\n"
    assert raw.line() == b"+OK\r\n"
    raw.close()


def test_a_session_past_its_command_limit_is_closed(transactional_db, alice):
    listener = start(command_limit=5)
    try:
        raw = Raw(listener)
        for _ in range(5):
            assert raw.command("CAPA").startswith(b"+OK")
            raw.until_dot()
        assert raw.command("CAPA").startswith(b"-ERR [SYS/PERM] Too many commands")
        assert raw.line() == b""
        raw.close()
    finally:
        listener.stop()


def test_an_idle_session_is_told_and_closed(transactional_db, alice):
    listener = start(idle_timeout=0.5)
    try:
        raw = Raw(listener)
        raw.command(f"USER {alice.address}")
        assert raw.command(f"PASS {PASSWORD}").startswith(b"+OK")
        started = time.monotonic()
        assert raw.line() == b"-ERR [SYS/TEMP] Idle timeout; closing\r\n"
        assert raw.line() == b""
        assert 0.4 < time.monotonic() - started < 5
        raw.close()
    finally:
        listener.stop()


def test_connections_past_the_per_address_limit_are_closed_before_tls(transactional_db):
    listener = start(max_sessions_per_address=1)
    try:
        first = Raw(listener)
        with pytest.raises((ConnectionError, OSError)):
            Raw(listener, timeout=5)
        first.close()
        time.sleep(0.2)  # the listener counts the first session out
        second = Raw(listener)
        assert second.greeting.startswith(b"+OK")
        second.close()
    finally:
        listener.stop()


def test_a_nearly_full_listener_closes_idle_connections_that_have_not_logged_in(
    transactional_db, alice
):
    listener = start(max_sessions=2, stress_share=0.5, stress_timeout=0.3)
    try:
        signed_in = Raw(listener)
        signed_in.command(f"USER {alice.address}")
        assert signed_in.command(f"PASS {PASSWORD}").startswith(b"+OK")
        idle = Raw(listener)
        assert idle.line() == b"-ERR [SYS/TEMP] Idle timeout; closing\r\n"
        assert idle.line() == b""
        idle.close()
        # RFC 1939's timer protects a user's session: the logged-in one keeps its full timeout.
        time.sleep(0.5)
        assert signed_in.command("NOOP") == b"+OK\r\n"
        signed_in.close()
    finally:
        listener.stop()
