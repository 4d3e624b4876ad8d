"""An attacker's view of both listeners (backbone ingress and the submission port), over real
sockets: STARTTLS command injection, SMTP smuggling, the AUTH exchange and its rate limits,
relaying tricks, resource limits, and what replies and logs give away. Each test names the
rule it holds; the ones for defects found in this review fail on the listener as it was."""

from __future__ import annotations

import base64
import logging
import smtplib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.cache import cache
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import Address, AddressGrant, AppPassword, Message
from hisp.smtp import credentials, server
from hisp.smtp.protocol import (
    JUNK_COMMAND_LIMIT,
    MAX_CONNECTIONS_PER_ADDRESS,
    address_group,
)
from tests.hisp.mail.conftest import HOSTED, _start
from tests.hisp.mail.test_smtp_ingress_rules import SMUGGLED, SMUGGLING
from tests.hisp.mail.test_submission import PASSWORD, _message
from tests.support.services import redis_url
from tests.support.services import unverified_tls as _context

CAROL = "carol@partner.example.net"


def _connect(controller, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(
        (controller.hostname, controller.port), timeout=10, source_address=(source, 0)
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _reply(sock: socket.socket) -> bytes:
    """One whole reply (the last line of a multi-line one); b"" once the server has closed."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        last = data.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
        if data.endswith(b"\r\n") and last[3:4] == b" ":
            return last


def _say(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line)
    return _reply(sock)


def _session(controller, source: str = "127.0.0.1", *, tls: bool = True) -> socket.socket:
    """A raw session after the greeting and EHLO (and STARTTLS and EHLO again)."""
    sock = _connect(controller, source)
    assert _reply(sock).startswith(b"220 ")
    _say(sock, b"EHLO client.example.net\r\n")
    if not tls:
        return sock
    assert _say(sock, b"STARTTLS\r\n").startswith(b"220 ")
    sock = _context().wrap_socket(sock)
    _say(sock, b"EHLO client.example.net\r\n")
    return sock


def _client(controller, source: str = "127.0.0.1") -> smtplib.SMTP:
    client = smtplib.SMTP(
        controller.hostname, controller.port, timeout=10, source_address=(source, 0)
    )
    client.ehlo("laptop")
    client.starttls(context=_context())
    client.ehlo("laptop")
    return client


def _plain(login: str, password: str) -> bytes:
    return base64.b64encode(f"\0{login}\0{password}".encode())


def _auth(controller, login: str, password: str, source: str = "127.0.0.1") -> bytes:
    sock = _session(controller, source)
    try:
        return _say(sock, b"AUTH PLAIN " + _plain(login, password) + b"\r\n")
    finally:
        sock.close()


def _user(name: str, *, grant: Address | None = None):
    user = get_user_model().objects.create_user(username=name, password=PASSWORD)
    if grant is not None:
        AddressGrant.objects.create(user=user, address=grant)
    return user


# --- 1. STARTTLS command injection (CVE-2011-0411) -----------------------------------------

INJECTED = [
    b"MAIL FROM:<evil@partner.example.net>\r\nRCPT TO:<bob@hospital.example.org>\r\n",
    b"MAIL FROM:<evil@partner.example.net>",  # no CRLF: it would prefix the first TLS line
]


@pytest.mark.parametrize("injected", INJECTED, ids=["commands", "half-line"])
def test_bytes_sent_behind_starttls_are_discarded_on_the_backbone(backbone, bob, injected):
    """RFC 3207 section 4.2: what arrived before the handshake is thrown away, whether whole
    commands or the start of one. Had it been kept, RCPT would follow an injected MAIL (250),
    or NOOP would run on as the injected path's tail (a syntax error)."""
    sock = _connect(backbone)
    try:
        _reply(sock)
        _say(sock, b"EHLO partner.example.net\r\n")
        sock.sendall(b"STARTTLS\r\n" + injected)  # one segment, as a man in the middle sends it
        assert _reply(sock).startswith(b"220 ")
        tls = _context().wrap_socket(sock)
        assert _say(tls, b"NOOP\r\n") == b"250 OK"
        _say(tls, b"EHLO partner.example.net\r\n")
        assert _say(tls, f"RCPT TO:<{bob.address}>\r\n".encode()).startswith(b"503")
        tls.close()
    finally:
        sock.close()
    assert Message.objects.count() == 0


def test_auth_injected_behind_starttls_does_not_authenticate_the_session(submission, alice):
    sock = _session(submission, tls=False)
    try:
        sock.sendall(b"STARTTLS\r\nAUTH PLAIN " + _plain(alice.address, PASSWORD) + b"\r\n")
        assert _reply(sock).startswith(b"220 ")
        tls = _context().wrap_socket(sock)
        _say(tls, b"EHLO laptop\r\n")
        assert _say(tls, f"MAIL FROM:<{alice.address}>\r\n".encode()).startswith(b"530")
        tls.close()
    finally:
        sock.close()


def test_a_client_stalling_in_the_tls_handshake_is_closed_by_the_idle_timeout(
    transactional_db, bob
):
    for controller in _start(server.backbone, timeout=0.5):
        sock = _session(controller, tls=False)
        try:
            assert _say(sock, b"STARTTLS\r\n").startswith(b"220 ")
            began = time.monotonic()
            sock.settimeout(5)
            assert sock.recv(1024) == b""  # no handshake: closed
            assert time.monotonic() - began < 3
        finally:
            sock.close()


def test_starttls_inside_tls_is_503_and_the_session_goes_on(backbone, bob, caplog):
    """RFC 3207 section 4.2. aiosmtpd answered 220 and began a second handshake inside the
    first, which failed on the client's next command: ERRORs with tracebacks, session gone."""
    sock = _session(backbone)
    try:
        assert _say(sock, b"STARTTLS\r\n").startswith(b"503 5.5.1")
        assert _say(sock, b"NOOP\r\n") == b"250 OK"
    finally:
        sock.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_failed_tls_handshake_is_one_warning_not_a_traceback(backbone, bob, caplog):
    """Clients too old for TLS 1.2 and scanners fail the handshake all day."""
    sock = _session(backbone, tls=False)
    try:
        assert _say(sock, b"STARTTLS\r\n").startswith(b"220 ")
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert sock.recv(1024) == b""
    finally:
        sock.close()
    time.sleep(0.2)  # the listener's record
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    warnings = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None


# --- 2. SMTP smuggling ---------------------------------------------------------------------


@pytest.mark.parametrize("sequence", SMUGGLING, ids=[repr(s) for s in SMUGGLING])
def test_smuggling_sequences_never_end_data_on_submission(submission, alice, sequence):
    """The backbone's matrix (test_smtp_ingress_rules) on the submission port: only
    <CRLF>.<CRLF> ends DATA (RFC 5321 section 4.1.1.4); the message is refused whole."""
    sock = _session(submission)
    try:
        _say(sock, b"AUTH PLAIN " + _plain(alice.address, PASSWORD) + b"\r\n")
        _say(sock, f"MAIL FROM:<{alice.address}>\r\n".encode())
        _say(sock, f"RCPT TO:<{CAROL}>\r\n".encode())
        assert _say(sock, b"DATA\r\n").startswith(b"354")
        body = _message(alice.address).rstrip(b"\r\n")
        reply = _say(sock, body + sequence + SMUGGLED + b".\r\n")
        after = _say(sock, b"NOOP\r\n")
    finally:
        sock.close()
    assert reply.startswith(b"550 5.6.0")
    assert after == b"250 OK"
    assert Message.objects.count() == 0


def test_bdat_is_not_offered_on_submission_either(submission, alice):
    with _client(submission) as client:
        assert not client.has_extn("chunking")
        client.login(alice.address, PASSWORD)
        client.mail(alice.address)
        client.rcpt(CAROL)
        assert client.docmd("BDAT", "10 LAST")[0] == 500
    assert Message.objects.count() == 0


# --- 3. AUTH ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "refusal"),
    [
        ([b"AUTH LOGIN\r\n", b"*\r\n"], b"501 5.7.0"),
        ([b"AUTH LOGIN\r\n", b"YWxpY2U=\r\n", b"*\r\n"], b"501 5.7.0"),
        ([b"AUTH PLAIN\r\n", b"*\r\n"], b"501 5.7.0"),
        ([b"AUTH LOGIN\r\n", b"not base64!\r\n"], b"501 5.5.2"),
        ([b"AUTH PLAIN\r\n", b"=\r\n"], b"501 5.5.2"),
        ([b"AUTH PLAIN =\r\n"], b"501 5.5.2"),  # empty (RFC 4954 "="), so no NULs: malformed
    ],
    ids=[
        "login-cancel",
        "password-cancel",
        "plain-cancel",
        "bad-base64",
        "plain-equals",
        "plain-initial-empty",
    ],
)
def test_an_aborted_auth_exchange_gets_exactly_one_reply(submission, alice, exchange, refusal):
    """RFC 4954 section 4: "*" cancels with a 501, and an undecodable answer gets a 501. One
    reply: aiosmtpd answered and then our handler did too, so every later command of the
    session got the reply meant for the one before."""
    sock = _session(submission)
    try:
        for line in exchange[:-1]:
            assert _say(sock, line).startswith(b"334 ")
        assert _say(sock, exchange[-1]).startswith(refusal)
        assert _say(sock, b"NOOP\r\n") == b"250 OK"
        # The session can still authenticate.
        assert _say(sock, b"AUTH PLAIN " + _plain(alice.address, PASSWORD) + b"\r\n")[:3] == b"235"
    finally:
        sock.close()


def test_an_empty_initial_response_is_an_empty_user_name(submission, alice):
    """RFC 4954 section 4: "=" is the zero-length initial response, not undecodable base64."""
    sock = _session(submission)
    try:
        assert _say(sock, b"AUTH LOGIN =\r\n") == b"334 " + base64.b64encode(b"Password:")
        assert _say(sock, base64.b64encode(b"whatever") + b"\r\n").startswith(b"535 5.7.8")
    finally:
        sock.close()


def test_an_overlong_auth_answer_is_500_5_5_6_and_never_read_as_commands(submission, alice, caplog):
    """RFC 4954 section 4. aiosmtpd's challenge raised on a line over the limit: an ERROR
    with a traceback, a 421 that closed nothing, and the rest of the line, when it came in
    later segments, read as commands."""
    caplog.set_level(logging.WARNING)
    sock = _session(submission)
    try:
        assert _say(sock, b"AUTH LOGIN\r\n").startswith(b"334 ")
        for _ in range(3):  # 3,000 octets in three segments
            sock.sendall(b"QUIT" * 250)
            time.sleep(0.2)
        assert _say(sock, b"\r\n").startswith(b"500 5.5.6")
        assert _say(sock, b"NOOP\r\n") == b"250 OK"
    finally:
        sock.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_an_overlong_auth_command_is_500_and_no_attempt(submission, alice):
    """An initial response past the command line limit is refused whole (aiosmtpd's 500) and
    checks no password, so it counts against nothing."""
    sock = _session(submission)
    try:
        assert _say(sock, b"AUTH PLAIN " + b"QUFB" * 300 + b"\r\n").startswith(b"500")
        assert _say(sock, b"NOOP\r\n") == b"250 OK"
        assert _say(sock, b"AUTH PLAIN " + _plain(alice.address, PASSWORD) + b"\r\n")[:3] == b"235"
    finally:
        sock.close()


def test_auth_during_a_mail_transaction_is_503(submission, alice):
    """RFC 4954 section 4 (and the session is already authenticated)."""
    with _client(submission) as client:
        client.login(alice.address, PASSWORD)
        client.mail(alice.address)
        code, _ = client.docmd("AUTH", "PLAIN " + _plain(alice.address, PASSWORD).decode())
    assert code == 503


@pytest.fixture
def redis_cache(settings) -> Iterator[None]:
    """The shared cache as production has it (REDIS_URL); the tests' default is the file
    cache of the quick start."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url(),
        }
    }
    cache.clear()
    yield
    cache.clear()


@pytest.mark.parametrize("shared_cache", ["file", "redis"])
def test_concurrent_guesses_at_one_account_get_no_more_than_the_limit(
    submission, alice, shared_cache, request
):
    """Each attempt is counted before its password is checked. Counted after, two dozen
    sessions guessing at once all read the count from before the others: 13 of 24 guesses
    were checked (limit 5)."""
    if shared_cache == "redis":
        request.getfixturevalue("redis_cache")
    sessions = [_session(submission) for _ in range(24)]
    start = threading.Barrier(len(sessions))
    replies: list[bytes] = []

    def guess(sock: socket.socket) -> None:
        start.wait()
        replies.append(_say(sock, b"AUTH PLAIN " + _plain(alice.address, "guess") + b"\r\n"))

    workers = [threading.Thread(target=guess, args=(sock,)) for sock in sessions]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for sock in sessions:
        sock.close()
    codes = sorted(reply[:3] for reply in replies)
    assert codes.count(b"535") == credentials.FAILURE_LIMIT
    assert codes.count(b"454") == len(sessions) - credentials.FAILURE_LIMIT


def test_logging_in_to_your_own_account_does_not_reset_your_addresss_failures(submission, alice):
    """Password spraying from one address: a success used to clear that address's count, so
    a user (any patient with a portal account) could try every other account without end."""
    for n in range(credentials.FAILURE_LIMIT - 1):
        assert _auth(submission, f"victim{n}@{HOSTED}", "Spring2026!")[:3] == b"535"
    assert _auth(submission, alice.address, PASSWORD)[:3] == b"235"
    assert _auth(submission, f"victim9@{HOSTED}", "Spring2026!")[:3] == b"535"
    # Alice's own account stays open to her at an address she signed in from (the NAT rule,
    # credentials.KNOWN_CLIENT_TTL); the address is spent for every other account.
    assert _auth(submission, alice.address, PASSWORD)[:3] == b"235"
    assert _auth(submission, f"victim10@{HOSTED}", "Spring2026!")[:8] == b"454 4.7."


def test_one_client_with_a_stale_password_does_not_lock_out_its_address(submission, alice):
    """The per-address count is of accounts that failed there: the clinic's one phone that
    keeps a changed password locks its own account, not every colleague behind the NAT."""
    _user(f"stale@{HOSTED}")
    replies = [_auth(submission, f"stale@{HOSTED}", "old password")[:3] for _ in range(8)]
    assert replies == [b"535"] * credentials.FAILURE_LIMIT + [b"454"] * 3
    assert _auth(submission, alice.address, PASSWORD)[:3] == b"235"


def test_failures_from_other_addresses_still_lock_an_account(submission, alice):
    """The account's count holds whoever guesses; 127.0.0.2 is another client address."""
    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"):
        assert _auth(submission, alice.address, "guess", source)[:3] == b"535"
    assert _auth(submission, alice.address, PASSWORD, "127.0.0.7")[:3] == b"454"
    assert _auth(submission, f"nobody@{HOSTED}", "guess", "127.0.0.7")[:3] == b"535"


def test_failure_counts_are_shared_by_every_listener_and_survive_reconnects(
    transactional_db, alice
):
    """Two listeners stand for two SMTP processes: the counts live in the shared cache."""
    cache.clear()
    for first in _start(server.submission):
        for second in _start(server.submission):
            for n in range(credentials.FAILURE_LIMIT):
                listener = (first, second)[n % 2]
                assert _auth(listener, alice.address, "guess", f"127.0.1.{n}")[:3] == b"535"
            assert _auth(first, alice.address, PASSWORD, "127.0.1.9")[:3] == b"454"
            assert _auth(second, alice.address, PASSWORD, "127.0.1.9")[:3] == b"454"
    cache.clear()


def test_a_locked_account_and_a_missing_one_get_the_same_reply(submission, alice):
    nobody = f"nobody@{HOSTED}"
    for n in range(credentials.FAILURE_LIMIT):
        for login in (alice.address, nobody):
            _auth(submission, login, "guess", f"127.0.2.{n}")
    assert _auth(submission, alice.address, PASSWORD, "127.0.2.9") == _auth(
        submission, nobody, PASSWORD, "127.0.2.9"
    )


def test_ipv6_clients_are_counted_by_their_64(db):
    """One site holds a whole /64 and can send from any address in it: counted per address,
    every guess could come from a fresh one. IPv4-mapped addresses stay per IPv4 address."""
    cache.clear()
    for n in range(credentials.FAILURE_LIMIT):
        outcome = credentials.check(f"user{n}@{HOSTED}", "guess", client=f"2001:db8:1:2::{n}")
        assert not outcome.throttled
    assert credentials.check("other@" + HOSTED, "guess", client="2001:db8:1:2:ffff::1").throttled
    assert not credentials.check("other@" + HOSTED, "guess", client="2001:db8:1:3::1").throttled
    assert address_group("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_group("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address_group("192.0.2.7") == "192.0.2.7"
    cache.clear()


def _auth_seconds(controller, login: str, source: str) -> float:
    began = time.monotonic()
    assert _auth(controller, login, "guess", source)[:3] == b"535"
    return time.monotonic() - began


def test_an_account_that_no_password_can_open_answers_as_slowly_as_a_missing_one(
    submission, alice, settings
):
    """A user with a second factor and no app password has nothing to compare: answered
    without a hash, the quick 535 told a guesser the account exists and is not worth trying."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    TOTPDevice.objects.create(user=alice.users.get(), name="phone", confirmed=True)
    missing = [_auth_seconds(submission, f"nobody@{HOSTED}", f"127.0.3.{n}") for n in range(3)]
    guarded = [_auth_seconds(submission, alice.address, f"127.0.4.{n}") for n in range(3)]
    assert min(guarded) > 0.5 * min(missing), (missing, guarded)


# --- 4. Relaying -----------------------------------------------------------------------------

MORE_RELAY_TRICKS = [
    ("bob@[IPv6:::1]", (550, b"5.7.1")),
    ("bob@[IPv6:2001:db8::1]", (550, b"5.7.1")),
    ("bob@xn--hospital-9ya.example.org", (550, b"5.7.1")),
    ("bob@hospital.example.org.elsewhere.example.com.", (553, b"5.1.3")),
    ('"bob%elsewhere.example.com"@hospital.example.org', (550, b"5.1.1")),
    ("@hospital.example.org:bob@elsewhere.example.com", (550, b"5.7.1")),
    ("bob@hospital.example.org,@elsewhere.example.com", (501, b"Syntax")),
]


@pytest.mark.parametrize(
    ("rcpt", "expected"), MORE_RELAY_TRICKS, ids=[rcpt for rcpt, _ in MORE_RELAY_TRICKS]
)
def test_more_relay_tricks_are_refused(backbone, bob, rcpt, expected):
    """Beyond test_smtp_relay's matrix: IPv6 literals, a punycode look-alike of the hosted
    domain, a quoted percent hack, a source route ending outside."""
    with smtplib.SMTP(backbone.hostname, backbone.port, timeout=10) as client:
        client.ehlo("relay-tester.example.com")
        client.mail("spammer@elsewhere.example.com")
        code, reply = client.docmd(f"RCPT TO:<{rcpt}>")
    assert (code, reply[: len(expected[1])]) == expected, reply


@pytest.mark.parametrize(
    "rcpt",
    ["bob@hospital\u3002example\u3002org", "bob@hospit\u00e4l.example.org", "b\u00f6b@" + HOSTED],
)
def test_non_ascii_paths_are_refused_before_any_lookup(backbone, bob, rcpt):
    """SMTPUTF8 is not offered, so a Unicode path (an IDN, or full-width dots that IDNA would
    read as dots) is refused as RFC 6531 3.5 says (553 5.6.7), never mapped onto a hosted
    domain."""
    sock = _session(backbone, tls=False)
    try:
        _say(sock, b"MAIL FROM:<spammer@elsewhere.example.com>\r\n")
        assert _say(sock, f"RCPT TO:<{rcpt}>\r\n".encode()).startswith(b"553 5.6.7")
    finally:
        sock.close()


def test_a_source_route_to_your_own_address_is_still_only_your_address(submission, alice, bob):
    """The route is dropped (RFC 5321 appendix C): MAIL FROM names only the final address,
    and another user's address behind a route of yours is refused like it is without one."""
    with _client(submission) as client:
        client.login(alice.address, PASSWORD)
        code, reply = client.docmd(f"MAIL FROM:<@{HOSTED}:{bob.address}>")
        assert (code, reply[:5]) == (550, b"5.7.1")
        assert client.docmd(f"MAIL FROM:<@{HOSTED}:{alice.address}>")[0] == 250


# --- 5. Resource limits ----------------------------------------------------------------------


def _greeting_soon(controller, source: str = "127.0.0.1") -> bytes:
    """The greeting of a new session once the listener has seen closed ones go (or not)."""
    for _ in range(20):
        sock = _connect(controller, source)
        try:
            greeting = _reply(sock)
        finally:
            sock.close()
        if greeting.startswith(b"220 "):
            return greeting
        time.sleep(0.1)
    return greeting


def test_one_address_holds_a_bounded_number_of_sessions(backbone, bob):
    held = [_connect(backbone) for _ in range(MAX_CONNECTIONS_PER_ADDRESS)]
    try:
        assert all(_reply(sock).startswith(b"220 ") for sock in held)
        extra = _connect(backbone)
        assert _reply(extra).startswith(b"421 4.7.0")
        assert extra.recv(1024) == b""  # and closed
        extra.close()
        other = _connect(backbone, "127.0.0.2")  # another client is still served
        assert _reply(other).startswith(b"220 ")
        other.close()
        held.pop().close()
        assert _greeting_soon(backbone).startswith(b"220 ")
    finally:
        for sock in held:
            sock.close()


def test_the_limit_counts_connections_not_tls_handshakes(transactional_db, bob):
    for controller in _start(server.backbone, max_connections_per_address=2):
        first = _session(controller)  # plain, then TLS: one connection
        second = _session(controller)
        third = _connect(controller)
        try:
            assert _reply(third).startswith(b"421 4.7.0")
            assert _say(first, b"NOOP\r\n") == b"250 OK"
        finally:
            for sock in (first, second, third):
                sock.close()
        # Every session gave its place back: two at once are served again.
        assert _greeting_soon(controller).startswith(b"220 ")
        again = [_session(controller) for _ in range(2)]
        for sock in again:
            sock.close()


@pytest.mark.parametrize("command", [b"NOOP", b"RSET", b"HELP", b"VRFY <bob>"])
def test_a_flood_of_commands_without_mail_is_cut_off(backbone, bob, command):
    sock = _session(backbone, tls=False)  # its EHLO is one of them
    try:
        sock.sendall((command + b"\r\n") * (JUNK_COMMAND_LIMIT - 1))
        replies = b""
        while replies.count(b"\r\n") < JUNK_COMMAND_LIMIT - 1:
            replies += sock.recv(65536)
        assert b"421" not in replies
        assert _say(sock, command + b"\r\n").startswith(b"421 4.7.0")
        assert sock.recv(1024) == b""
    finally:
        sock.close()


def test_a_partner_sending_mail_is_never_cut_off_by_the_junk_limit(backbone, bob):
    """Each accepted MAIL starts the count again: a long session of real transactions, each
    with a RSET and a NOOP between, goes on."""
    with smtplib.SMTP(backbone.hostname, backbone.port, timeout=10) as client:
        client.ehlo("partner.example.net")
        for _ in range(JUNK_COMMAND_LIMIT + 10):
            assert client.mail("doc@partner.example.net")[0] == 250
            assert client.rset()[0] == 250
            assert client.noop()[0] == 250


def test_a_command_trickled_a_byte_at_a_time_still_meets_the_idle_timeout(transactional_db, bob):
    """Outside DATA the timer restarts only on a whole command: bytes of an unfinished line
    do not keep a session alive."""
    for controller in _start(server.backbone, timeout=0.5):
        sock = _connect(controller)
        try:
            _reply(sock)
            began = time.monotonic()
            sock.settimeout(0.1)
            closing = b""
            for byte in b"EHLO partner.example.net" * 4:
                try:
                    sock.sendall(bytes([byte]))
                    closing = sock.recv(1024)
                    break
                except TimeoutError:
                    continue
            waited = time.monotonic() - began
        finally:
            sock.close()
    assert closing.startswith(b"421 4.4.2")
    assert waited < 2


def _backbone_data(controller, rcpt: str, body: bytes, *, size: int | None = None) -> bytes:
    sock = _session(controller, tls=False)
    try:
        param = f" SIZE={size}" if size is not None else ""
        assert _say(sock, f"MAIL FROM:<doc@partner.example.net>{param}\r\n".encode())[:3] == b"250"
        _say(sock, f"RCPT TO:<{rcpt}>\r\n".encode())
        assert _say(sock, b"DATA\r\n").startswith(b"354")
        return _say(sock, body + b".\r\n")
    finally:
        sock.close()


def _body_of(size: int) -> bytes:
    head = b"Subject: sized\r\n\r\n"
    filler = size - len(head) - 2
    lines = [b"x" * 76] * (filler // 78)
    last = filler - len(lines) * 78
    body = head + b"".join(line + b"\r\n" for line in lines) + b"y" * last + b"\r\n"
    assert len(body) == size
    return body


def test_the_size_limit_holds_to_the_octet_without_and_despite_a_size_parameter(
    settings, transactional_db, bob
):
    """HISP_MAX_MESSAGE_BYTES on the real backbone: a message of exactly the limit is
    stored, one octet more is 552, and a SIZE parameter that understates changes nothing."""
    settings.HISP_MAX_MESSAGE_BYTES = 4000
    for controller in _start(server.backbone):
        assert _backbone_data(controller, bob.address, _body_of(4000))[:3] == b"250"
        assert _backbone_data(controller, bob.address, _body_of(4001))[:3] == b"552"
        assert _backbone_data(controller, bob.address, _body_of(4001), size=100)[:3] == b"552"
    assert Message.objects.count() == 1


# --- 6. What replies and logs give away ------------------------------------------------------


def test_greeting_and_replies_name_no_software_version_or_machine(backbone, bob, settings):
    import aiosmtpd

    sock = _connect(backbone)
    try:
        replies = [_reply(sock)]
        sock.sendall(b"EHLO partner.example.net\r\n")
        ehlo = b""
        while not ehlo.endswith(b"250 HELP\r\n"):
            ehlo += sock.recv(4096)
        replies += [
            ehlo,
            _say(sock, b"HELP\r\n"),
            _say(sock, b"VRFY <bob>\r\n"),
            _say(sock, b"EXPN staff\r\n"),
            _say(sock, b"XYZZY\r\n"),
        ]
    finally:
        sock.close()
    text = b"\n".join(replies).decode()
    assert replies[0] == f"220 {settings.HISP_HOSTNAME} HISP ESMTP".encode()
    for secret in (aiosmtpd.__version__, "Python", "aiosmtpd", socket.gethostname()):
        assert secret not in text, text
    assert replies[3].startswith(b"252")  # VRFY tells nothing about bob


def test_an_error_of_ours_is_a_421_without_details_that_closes_the_session(
    submission, alice, settings
):
    """An error no handler expects (here MAIL's SIZE check meeting a message size limit the
    code cannot read) reaches the session error handler: the reply tells nothing of it, not
    even the setting's value, and the session is closed."""
    with _client(submission) as client:
        client.login(alice.address, PASSWORD)
        settings.HISP_MAX_MESSAGE_BYTES = "25 MB"  # not a number of bytes: int() fails
        code, reply = client.docmd(f"MAIL FROM:<{alice.address}> SIZE=1000")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    assert (code, reply) == (421, b"4.3.0 Local error; closing connection")


def test_no_auth_secret_reaches_any_log(backbone, submission, alice, caplog):
    """Every log record at every level, while clients authenticate in every way, fail, cancel,
    send raw passwords where base64 was due, overlong answers, and AUTH LOGIN answers after
    the AUTH was refused (then read as commands)."""
    secret = "s3cret-Pass/word+42"
    AppPassword.objects.create(
        user=alice.users.get(), name="laptop", password_hash=make_password(secret)
    )
    user = base64.b64encode(alice.address.encode())
    word = base64.b64encode(secret.encode())
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="mail.log")
    exchanges = [
        (submission, True, [b"AUTH PLAIN " + _plain(alice.address, secret)]),
        (submission, True, [b"AUTH LOGIN " + user, word]),
        (submission, True, [b"AUTH LOGIN", user, word]),
        (submission, True, [b"AUTH PLAIN", _plain(alice.address, secret + "x")]),
        (submission, True, [b"AUTH LOGIN", user, secret.encode()]),  # not base64
        (submission, True, [b"AUTH LOGIN", user, word * 40]),  # overlong
        (submission, False, [b"AUTH LOGIN", user, word]),  # 530 before STARTTLS
        (backbone, True, [b"AUTH LOGIN", user, word]),  # 504 on the backbone
        (backbone, False, [b"AUTH PLAIN " + _plain(alice.address, secret)]),
    ]
    for controller, tls, lines in exchanges:
        sock = _session(controller, tls=tls)
        try:
            for line in lines:
                _say(sock, line + b"\r\n")
        finally:
            sock.close()
    time.sleep(0.2)  # the listener's last records
    logged = caplog.text
    assert "AUTH" in logged  # the records were captured
    for leak in (
        secret,
        word.decode(),
        word.decode().upper(),
        _plain(alice.address, secret).decode(),
        _plain(alice.address, secret).decode().upper(),
    ):
        assert leak not in logged, leak


def test_both_limits_come_from_the_settings(transactional_db, settings):
    settings.HISP_SMTP_MAX_SESSIONS_PER_ADDRESS = 1
    settings.HISP_SMTP_JUNK_COMMAND_LIMIT = 3
    for controller in _start(server.backbone):
        first = _session(controller, tls=False)  # its EHLO is the first of three
        second = _connect(controller)
        try:
            assert _reply(second).startswith(b"421 4.7.0")
            assert _say(first, b"NOOP\r\n") == b"250 OK"
            assert _say(first, b"NOOP\r\n") == b"250 OK"
            assert _say(first, b"NOOP\r\n").startswith(b"421 4.7.0")
        finally:
            first.close()
            second.close()
