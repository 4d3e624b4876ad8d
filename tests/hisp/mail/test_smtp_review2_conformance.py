"""Second review of both listeners against RFC 5321, RFC 4954 and RFC 4616, over real sockets:
what HELP says, AUTH on a listener that has no accounts, a PLAIN authorization identity naming
somebody else, and the AUTH parameter of MAIL that relaying MTAs send. Each test named for a
defect fails on the listener as it was before this review; the others guard the fixes' edges."""

from __future__ import annotations

import base64

import pytest
from django.core.cache import cache

from hisp.models import Message
from hisp.smtp import credentials
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.test_smtp_hostile_clients import _connect, _reply, _say, _session
from tests.hisp.mail.test_submission import PASSWORD, _message


def _plain(authzid: str, login: str, password: str) -> bytes:
    return base64.b64encode(f"{authzid}\0{login}\0{password}".encode())


# --- HELP (RFC 5321 section 4.1.1.8) --------------------------------------------------------


def test_help_lists_mail_and_data_and_explains_them(backbone, bob):
    """aiosmtpd's HELP lists the methods that carry its @syntax; our overrides of MAIL, DATA
    and AUTH had lost it, so HELP left out the two commands a partner needs most and
    "HELP MAIL" was a 501."""
    sock = _connect(backbone)
    try:
        assert _reply(sock).startswith(b"220 ")
        _say(sock, b"EHLO partner.example.net\r\n")
        listed = _say(sock, b"HELP\r\n")
        assert listed.startswith(b"250 Supported commands: ")
        commands = set(listed.split(b": ", 1)[1].split())
        assert {b"MAIL", b"RCPT", b"DATA", b"RSET", b"NOOP", b"QUIT", b"STARTTLS"} <= commands
        assert b"AUTH" not in commands  # the backbone has no mechanism to offer
        assert _say(sock, b"HELP MAIL\r\n") == (
            b"250 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"
        )
        assert _say(sock, b"HELP DATA\r\n") == b"250 Syntax: DATA"
    finally:
        sock.close()


def test_help_inside_tls_no_longer_offers_starttls(backbone, bob):
    """RFC 3207 section 4.2: STARTTLS is not offered again once TLS is on (it is a 503 now)."""
    sock = _session(backbone)
    try:
        commands = _say(sock, b"HELP\r\n").split(b": ", 1)[1].split()
        assert b"STARTTLS" not in commands
        assert b"MAIL" in commands
    finally:
        sock.close()


def test_help_on_submission_lists_auth_once_it_may_be_used(submission, alice):
    sock = _session(submission)
    try:
        assert (
            _say(sock, b"AUTH PLAIN " + _plain("", alice.address, PASSWORD) + b"\r\n")[:3] == b"235"
        )
        commands = _say(sock, b"HELP\r\n").split(b": ", 1)[1].split()
        assert {b"AUTH", b"MAIL", b"DATA"} <= set(commands)
        assert _say(sock, b"HELP AUTH\r\n") == b"250 Syntax: AUTH <mechanism>"
    finally:
        sock.close()


# --- AUTH on the backbone -------------------------------------------------------------------


def test_auth_on_the_backbone_is_504_in_the_clear_as_inside_tls(backbone, bob):
    """The backbone has no accounts. In the clear aiosmtpd answered 538 "encryption required",
    which tells a client to come back over TLS, where it then got 504: one answer for both."""
    token = _plain("", f"alice@{HOSTED}", PASSWORD)
    plain = _connect(backbone)
    tls = _session(backbone)
    try:
        assert _reply(plain).startswith(b"220 ")
        _say(plain, b"EHLO relay-tester.example.com\r\n")
        for sock in (plain, tls):
            assert _say(sock, b"AUTH PLAIN " + token + b"\r\n") == (
                b"504 5.5.4 Unrecognized authentication type"
            )
            assert _say(sock, b"MAIL FROM:<spammer@elsewhere.example.com>\r\n")[:3] == b"250"
            assert _say(sock, b"RCPT TO:<someone@elsewhere.example.com>\r\n")[:9] == (b"550 5.7.1")
            assert _say(sock, b"RSET\r\n") == b"250 OK"
    finally:
        plain.close()
        tls.close()


def test_auth_on_the_backbone_after_helo_is_still_not_recognised(backbone, bob):
    """AUTH is an ESMTP extension: after HELO it stays aiosmtpd's 500, not our 504."""
    sock = _connect(backbone)
    try:
        assert _reply(sock).startswith(b"220 ")
        _say(sock, b"HELO relay-tester.example.com\r\n")
        assert _say(sock, b"AUTH PLAIN\r\n").startswith(b"500 ")
    finally:
        sock.close()


# --- AUTH PLAIN authorization identity (RFC 4616 section 2) ---------------------------------


def test_plain_with_an_authzid_naming_someone_else_is_refused(submission, alice, bob):
    """RFC 4616 section 2: the server MUST check that the credentials may act as the
    authorization identity. Alice's password with authzid bob was accepted as plain Alice,
    so a client asking to act as Bob was told it did."""
    sock = _session(submission)
    try:
        reply = _say(sock, b"AUTH PLAIN " + _plain(bob.address, alice.address, PASSWORD) + b"\r\n")
        assert reply.startswith(b"535 5.7.8 ")
        assert _say(sock, f"MAIL FROM:<{alice.address}>\r\n".encode()).startswith(b"530 ")
    finally:
        sock.close()


def test_a_refused_authzid_is_no_password_guess(submission, alice, bob):
    """The authzid is refused before the password is looked at, so it tells nothing about the
    password and counts against neither the account nor the client."""
    cache.clear()
    for _ in range(credentials.FAILURE_LIMIT + 2):
        sock = _session(submission)
        try:
            token = _plain(bob.address, alice.address, "wrong guess")
            assert _say(sock, b"AUTH PLAIN " + token + b"\r\n").startswith(b"535 5.7.8 ")
        finally:
            sock.close()
    sock = _session(submission)
    try:
        token = _plain("", alice.address, PASSWORD)
        assert _say(sock, b"AUTH PLAIN " + token + b"\r\n")[:3] == b"235"
    finally:
        sock.close()


@pytest.mark.parametrize("authzid", ["same", "case"])
def test_plain_with_an_authzid_naming_the_same_account_works(submission, alice, authzid):
    """An authzid equal to the login (as some clients send) names the account itself, in any
    case, like the login does."""
    name = alice.address if authzid == "same" else alice.address.upper()
    sock = _session(submission)
    try:
        token = _plain(name, alice.address, PASSWORD)
        assert _say(sock, b"AUTH PLAIN " + token + b"\r\n")[:3] == b"235"
        assert _say(sock, f"MAIL FROM:<{alice.address}>\r\n".encode())[:3] == b"250"
        assert _say(sock, b"RCPT TO:<carol@partner.example.net>\r\n")[:3] == b"250"
        assert _say(sock, b"DATA\r\n")[:3] == b"354"
        reply = _say(sock, _message(alice.address) + b".\r\n")
        assert reply.startswith(b"250 2.0.0 OK queued as ")
    finally:
        sock.close()
    assert Message.objects.count() == 1


# --- the AUTH parameter of MAIL (RFC 4954 section 5) ----------------------------------------

AUTH_PARAMETERS = ["AUTH=<>", "AUTH=alice+40hospital.example.org", "SIZE=300 AUTH=<> BODY=8BITMIME"]


@pytest.mark.parametrize("parameters", AUTH_PARAMETERS)
def test_an_mta_relaying_through_submission_may_send_the_auth_parameter(
    submission, alice, parameters
):
    """RFC 4954 section 5: a server offering AUTH takes AUTH= on MAIL. aiosmtpd answered 555,
    so an EHR's or clinic's MTA relaying through the submission port (Exim and sendmail add
    AUTH=<> after authenticating) had every message refused."""
    sock = _session(submission)
    try:
        assert (
            _say(sock, b"AUTH PLAIN " + _plain("", alice.address, PASSWORD) + b"\r\n")[:3] == b"235"
        )
        reply = _say(sock, f"MAIL FROM:<{alice.address}> {parameters}\r\n".encode())
        assert reply == b"250 2.1.0 OK"
        assert _say(sock, b"RCPT TO:<carol@partner.example.net>\r\n")[:3] == b"250"
        assert _say(sock, b"DATA\r\n")[:3] == b"354"
        reply = _say(sock, _message(alice.address) + b".\r\n")
        assert reply.startswith(b"250 2.0.0 OK queued as ")
    finally:
        sock.close()
    assert Message.objects.count() == 1


def test_the_auth_parameter_does_not_widen_who_may_send(submission, alice, bob):
    """Behaving as if AUTH=<> (RFC 4954 section 5: we trust no client to vouch for another
    submitter): MAIL FROM is still checked against the authenticated user."""
    sock = _session(submission)
    try:
        assert (
            _say(sock, b"AUTH PLAIN " + _plain("", alice.address, PASSWORD) + b"\r\n")[:3] == b"235"
        )
        reply = _say(sock, f"MAIL FROM:<{bob.address}> AUTH={bob.address}\r\n".encode())
        assert reply.startswith(b"550 5.7.1 ")
        reply = _say(sock, f"MAIL FROM:<{alice.address}> AUTH=<> FOO=1\r\n".encode())
        assert reply.startswith(b"555 ")  # other unknown parameters are still refused
    finally:
        sock.close()


def test_the_backbone_offers_no_auth_so_takes_no_auth_parameter(backbone, bob):
    sock = _connect(backbone)
    try:
        assert _reply(sock).startswith(b"220 ")
        _say(sock, b"EHLO partner.example.net\r\n")
        assert _say(sock, b"MAIL FROM:<doc@partner.example.net> AUTH=<>\r\n").startswith(b"555 ")
    finally:
        sock.close()
