"""Recipients refused for a non-ASCII path count towards the session's limit on refused
recipients, like every other refusal (hisp/smtp/protocol.py, REFUSED_RECIPIENT_LIMIT). They
did not: a harvester could go on sending RCPTs after the limit had closed every other kind,
and each RCPT line may carry a plain ASCII guess elsewhere in the same session. Over real
sockets on both listeners."""

from __future__ import annotations

from django.core.cache import cache

from hisp.smtp import server
from hisp.smtp.protocol import NON_ASCII_ADDRESS, NOT_UTF8_RECIPIENT, TOO_MANY_REFUSED
from tests.hisp.mail.conftest import HOSTED, _start
from tests.hisp.mail.test_smtp_hostile_clients import _plain, _reply, _say, _session
from tests.hisp.mail.test_submission import PASSWORD

LIMIT = 3


def _non_ascii(n: int) -> bytes:
    return f"RCPT TO:<g\u00fcess{n}@{HOSTED}>\r\n".encode()


def test_non_ascii_recipients_count_towards_the_refused_recipient_limit(transactional_db, bob):
    for controller in _start(
        server.backbone, refused_recipient_limit=LIMIT, refused_recipient_delay=0.0
    ):
        sock = _session(controller, tls=False)
        try:
            assert _say(sock, b"MAIL FROM:<doc@partner.example.net>\r\n").startswith(b"250")
            for n in range(LIMIT):
                assert _say(sock, _non_ascii(n)).decode() == NON_ASCII_ADDRESS
            assert _say(sock, _non_ascii(LIMIT)) == TOO_MANY_REFUSED.encode()
            assert _reply(sock) == b""  # closed
        finally:
            sock.close()


def test_they_count_together_with_unknown_recipients(transactional_db, bob):
    """Not UTF-8 at all (a syntax error, 501) counts as well, and so do the handler's 550s."""
    for controller in _start(
        server.backbone, refused_recipient_limit=LIMIT, refused_recipient_delay=0.0
    ):
        sock = _session(controller, tls=False)
        try:
            assert _say(sock, b"MAIL FROM:<doc@partner.example.net>\r\n").startswith(b"250")
            assert _say(sock, _non_ascii(0)).decode() == NON_ASCII_ADDRESS
            reply = _say(sock, b"RCPT TO:<g\xfcess@" + HOSTED.encode() + b">\r\n")
            assert reply.decode() == NOT_UTF8_RECIPIENT
            assert _say(sock, f"RCPT TO:<nobody@{HOSTED}>\r\n".encode()).startswith(b"550")
            assert _say(sock, f"RCPT TO:<{bob.address}>\r\n".encode()).startswith(b"250")
            assert _say(sock, _non_ascii(1)) == TOO_MANY_REFUSED.encode()
        finally:
            sock.close()


def test_submission_counts_them_too(transactional_db, alice):
    cache.clear()  # the AUTH failure counters live in the cache
    for controller in _start(
        server.submission, refused_recipient_limit=LIMIT, refused_recipient_delay=0.0
    ):
        sock = _session(controller)
        try:
            assert _say(sock, b"AUTH PLAIN " + _plain(alice.address, PASSWORD) + b"\r\n")[:3] == (
                b"235"
            )
            assert _say(sock, f"MAIL FROM:<{alice.address}>\r\n".encode()).startswith(b"250")
            for n in range(LIMIT):
                assert _say(sock, _non_ascii(n)).decode() == NON_ASCII_ADDRESS
            assert _say(sock, _non_ascii(LIMIT)) == TOO_MANY_REFUSED.encode()
        finally:
            sock.close()
