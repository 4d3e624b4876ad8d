"""RFC 4616 section 2: a server MUST accept a PLAIN authzid, authcid and passwd of up to 255
octets each, and RFC 4954 section 4: it MUST handle the largest response its mechanisms
generate, whatever its other line limits. Such a PLAIN response is 1,024 octets of base64,
more than the 1,001-octet text line the listener read challenge answers as, so it was refused
``500 5.5.6`` as too long and never checked. A client sends it as the answer to the challenge,
since RFC 4954 forbids an initial response that would make the AUTH line too long. Over real
sockets on the submission listener."""

from __future__ import annotations

import base64

from django.core.cache import cache

from tests.hisp.mail.test_smtp_hostile_clients import _say, _session
from tests.hisp.mail.test_submission import PASSWORD


def _plain_response(authzid: str, login: str, password: str) -> bytes:
    return base64.b64encode(f"{authzid}\0{login}\0{password}".encode())


def test_a_plain_response_of_the_largest_size_rfc_4616_requires_is_checked(submission, alice):
    login = "a" * 240 + "@example.org"  # 252 octets: no such account
    password = "p" * 255
    response = _plain_response(login, login, password)
    assert len(response) > 1001
    sock = _session(submission)
    try:
        assert _say(sock, b"AUTH PLAIN\r\n") == b"334 "
        assert _say(sock, response + b"\r\n").startswith(b"535 5.7.8 ")  # read, then refused
        assert _say(sock, b"NOOP\r\n") == b"250 OK"  # no line of it read as a command
    finally:
        sock.close()


def test_a_long_response_that_is_right_signs_in(submission, alice):
    """The same path with real credentials, padded to past the old limit by whitespace
    around the base64 (which the exchange strips)."""
    cache.clear()
    response = _plain_response(alice.address, alice.address, PASSWORD)
    sock = _session(submission)
    try:
        assert _say(sock, b"AUTH PLAIN\r\n") == b"334 "
        padded = b" " * 1200 + response + b"\r\n"
        assert _say(sock, padded).startswith(b"235 ")
    finally:
        sock.close()


def test_an_answer_past_the_new_limit_is_still_500_5_5_6(submission, alice):
    sock = _session(submission)
    try:
        assert _say(sock, b"AUTH PLAIN\r\n") == b"334 "
        assert _say(sock, b"QUFB" * 1000 + b"\r\n").startswith(b"500 5.5.6")
        assert _say(sock, b"NOOP\r\n") == b"250 OK"
    finally:
        sock.close()
