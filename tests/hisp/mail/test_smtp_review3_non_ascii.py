"""Third review: addresses with bytes beyond ASCII on both listeners, over real sockets.

SMTPUTF8 is not offered, so RFC 6531 section 3.5 (and RFC 3463 X.6.7) asks for ``553 5.6.7``
to a UTF-8 address in MAIL or RCPT; aiosmtpd answered ``500 strict ASCII mode`` to all of them
before the command ran. Bytes that are not UTF-8 are no address at all: a syntax error."""

from __future__ import annotations

from hisp.models import Message
from hisp.smtp.protocol import (
    NON_ASCII_ADDRESS,
    NON_ASCII_DOMAIN,
    NON_ASCII_PARAMETER,
    NOT_UTF8_RECIPIENT,
    NOT_UTF8_SENDER,
    non_ascii_path_reply,
)
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.test_smtp_hostile_clients import _plain, _say, _session
from tests.hisp.mail.test_submission import PASSWORD

# (path as sent, the reply to MAIL FROM, the reply to RCPT TO): non-ASCII in the local part,
# the domain (an IDN; full-width dots, which IDNA would read as dots), both; then Latin-1 bytes.
PATHS = [
    ("b\u00f6b@" + HOSTED, NON_ASCII_ADDRESS, NON_ASCII_ADDRESS),
    ("bob@hospit\u00e4l.example.org", NON_ASCII_DOMAIN, NON_ASCII_DOMAIN),
    ("bob@hospital\u3002example\u3002org", NON_ASCII_DOMAIN, NON_ASCII_DOMAIN),
    ("\u00e5sa@hospit\u00e4l.example.org", NON_ASCII_ADDRESS, NON_ASCII_ADDRESS),
    (b"b\xf6b@" + HOSTED.encode(), NOT_UTF8_SENDER, NOT_UTF8_RECIPIENT),
    (b"bob@hospit\xe4l.example.org", NOT_UTF8_SENDER, NOT_UTF8_RECIPIENT),
]


def _line(verb: bytes, path: str | bytes, rest: bytes = b"") -> bytes:
    raw = path.encode() if isinstance(path, str) else path
    return verb + b":<" + raw + b">" + rest + b"\r\n"


def test_backbone_answers_non_ascii_paths_with_their_rfc_6531_replies(backbone, bob):
    sock = _session(backbone, tls=False)
    try:
        for path, as_sender, as_recipient in PATHS:
            assert _say(sock, _line(b"MAIL FROM", path)).decode() == as_sender, path
            # The session goes on: a proper sender, then the same path as a recipient.
            assert _say(sock, b"MAIL FROM:<doc@partner.example.net>\r\n").startswith(b"250")
            assert _say(sock, _line(b"RCPT TO", path)).decode() == as_recipient, path
            assert _say(sock, f"RCPT TO:<{bob.address}>\r\n".encode()).startswith(b"250")
            assert _say(sock, b"RSET\r\n").startswith(b"250")
    finally:
        sock.close()


def test_submission_answers_non_ascii_paths_with_their_rfc_6531_replies(submission, alice):
    sock = _session(submission)
    try:
        # Before AUTH the submission port says so first, as for any other MAIL.
        assert _say(sock, _line(b"MAIL FROM", PATHS[0][0])).startswith(b"530")
        assert _say(sock, b"AUTH PLAIN " + _plain(alice.address, PASSWORD) + b"\r\n")[:3] == b"235"
        for path, as_sender, as_recipient in PATHS:
            assert _say(sock, _line(b"MAIL FROM", path)).decode() == as_sender, path
            assert _say(sock, f"MAIL FROM:<{alice.address}>\r\n".encode()).startswith(b"250")
            assert _say(sock, _line(b"RCPT TO", path)).decode() == as_recipient, path
            assert _say(sock, b"RSET\r\n").startswith(b"250")
    finally:
        sock.close()


def test_a_non_ascii_recipient_keeps_the_command_order(backbone, bob):
    """RCPT before MAIL is still 503, whatever its path holds."""
    sock = _session(backbone, tls=False)
    try:
        reply = _say(sock, _line(b"RCPT TO", "b\u00f6b@" + HOSTED))
        assert reply == b"503 Error: need MAIL command"
    finally:
        sock.close()


def test_non_ascii_only_in_a_parameter_is_a_bad_parameter(backbone, bob):
    sock = _session(backbone, tls=False)
    try:
        reply = _say(sock, _line(b"MAIL FROM", "doc@partner.example.net", " X=\u00e9".encode()))
        assert reply.decode() == NON_ASCII_PARAMETER
    finally:
        sock.close()


def test_other_commands_with_non_ascii_still_get_500(backbone):
    sock = _session(backbone, tls=False)
    try:
        assert _say(sock, "VRFY b\u00f6b\r\n".encode()).startswith(b"500")
        assert _say(sock, "MAIL b\u00f6b\r\n".encode()).startswith(b"501")  # no FROM:
    finally:
        sock.close()


def test_non_ascii_paths_store_nothing(backbone, bob):
    sock = _session(backbone, tls=False)
    try:
        _say(sock, b"MAIL FROM:<doc@partner.example.net>\r\n")
        _say(sock, _line(b"RCPT TO", "b\u00f6b@" + HOSTED))
        assert _say(sock, b"DATA\r\n").startswith(b"503")  # no recipient was accepted
    finally:
        sock.close()
    assert not Message.objects.exists()


def test_the_reply_is_chosen_from_the_bytes_as_sent():
    assert non_ascii_path_reply("MAIL FROM:<b\u00f6b@x.example>\r\n".encode(), sender=True) == (
        NON_ASCII_ADDRESS
    )
    assert non_ascii_path_reply(b"rcpt to: <bob@h\xc3\xa4.example>\r\n", sender=False) == (
        NON_ASCII_DOMAIN
    )
    assert non_ascii_path_reply(b"RCPT TO:b\xf6b@x.example\r\n", sender=False) == (
        NOT_UTF8_RECIPIENT
    )
    assert non_ascii_path_reply(b"MAIL \xc3\xa9\r\n", sender=True) is None
