"""Never an open relay: relaying tricks on the unauthenticated backbone port, over real SMTP.

Every address form that names a destination outside the hosted domains is refused with
``550 5.7.1``; tricks that stay inside a hosted domain (percent hack, bang path, quoted local
part with an ``@``) only ever name a local part we do not have (``550 5.1.1``); source routes are
ignored (RFC 5321 section 4.1.1.3 and appendix C), so only their final address counts; the
domain's case does not matter (RFC 5321 section 2.4); malformed paths, such as a trailing dot
(not in the RFC 5321 section 4.1.2 ``Domain`` grammar), are syntax errors (``553 5.1.3``).
"""

from __future__ import annotations

import smtplib

import pytest

from hisp.models import Delivery, Message
from hisp.services.mail import find_address
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.test_ingress import MESSAGE

RELAY = (550, b"5.7.1")
UNKNOWN = (550, b"5.1.1")
MALFORMED = (553, b"5.1.3")
ACCEPTED = (250, b"2.1.5")

MATRIX = [
    ("someone@elsewhere.example.com", RELAY),
    (f"bob@sub.{HOSTED}", RELAY),
    (f"bob@{HOSTED}.elsewhere.example.com", RELAY),
    ("bob@elsewhere.example.com", RELAY),
    (f"bob%elsewhere.example.com@{HOSTED}", UNKNOWN),
    (f"someone%elsewhere.example.com@{HOSTED}", UNKNOWN),
    (f"elsewhere.example.com!bob@{HOSTED}", UNKNOWN),
    ("@relay.example.com:someone@elsewhere.example.com", RELAY),
    (f"@{HOSTED}:someone@elsewhere.example.com", RELAY),
    (f"@{HOSTED},@relay.example.com:someone@elsewhere.example.com", RELAY),
    (f'"someone@elsewhere.example.com"@{HOSTED}', UNKNOWN),
    (f'"bob@{HOSTED}"@elsewhere.example.com', RELAY),
    ("someone@[127.0.0.1]", RELAY),
    ("bob@[127.0.0.1]", RELAY),
    ("someone", RELAY),
    ("someone@elsewhere.example.com.", MALFORMED),
    (f"bob@{HOSTED}.", MALFORMED),
    (f"bob@{HOSTED}..", MALFORMED),
    (f"bob@{HOSTED}@elsewhere.example.com", MALFORMED),
    ("@relay.example.com,@other.example.com:bob@" + HOSTED, ACCEPTED),
    (f"bob@{HOSTED.upper()}", ACCEPTED),
    ("BOB@Hospital.Example.Org", ACCEPTED),
    (f'"bob"@{HOSTED}', ACCEPTED),
]


def _client(controller) -> smtplib.SMTP:
    client = smtplib.SMTP(controller.hostname, controller.port, timeout=10)
    client.ehlo("relay-tester.example.com")
    return client


@pytest.mark.parametrize(("rcpt", "expected"), MATRIX, ids=[rcpt for rcpt, _ in MATRIX])
def test_relay_attempt_gets_the_right_reply(backbone, bob, rcpt, expected):
    with _client(backbone) as client:
        client.mail("spammer@elsewhere.example.com")
        code, reply = client.docmd(f"RCPT TO:<{rcpt}>")
    assert (code, reply[:5]) == expected, reply


def test_nothing_is_queued_for_a_non_hosted_destination(backbone, bob):
    """One session trying every trick plus a few spellings of bob: only bob is stored, and
    every stored envelope recipient is a hosted address."""
    with _client(backbone) as client:
        client.mail("spammer@elsewhere.example.com")
        replies = {rcpt: client.docmd(f"RCPT TO:<{rcpt}>")[0] for rcpt, _ in MATRIX}
        code, _ = client.data(MESSAGE)
    assert code == 250
    stored = Message.objects.get()
    accepted = [rcpt for rcpt, got in replies.items() if got == 250]
    assert len(stored.envelope_to) == len(accepted) == 4
    assert {find_address(rcpt) for rcpt in stored.envelope_to} == {bob}
    assert not Message.objects.filter(direction=Message.Direction.OUTBOUND).exists()
    assert not Delivery.objects.exists()


def test_data_after_only_refused_recipients_is_503_and_stores_nothing(backbone, bob):
    with _client(backbone) as client:
        client.mail("spammer@elsewhere.example.com")
        for rcpt, expected in MATRIX:
            if expected != ACCEPTED:
                client.docmd(f"RCPT TO:<{rcpt}>")
        code, _ = client.docmd("DATA")
    assert code == 503
    assert not Message.objects.exists()


def test_null_sender_cannot_relay_either(backbone, bob):
    with _client(backbone) as client:
        client.mail("")
        code, reply = client.rcpt("someone@elsewhere.example.com")
    assert (code, reply[:5]) == RELAY


def test_starttls_does_not_open_the_relay(backbone, bob):
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with _client(backbone) as client:
        assert client.starttls(context=context)[0] == 220
        client.ehlo("relay-tester.example.com")
        client.mail("spammer@elsewhere.example.com")
        code, reply = client.rcpt("someone@elsewhere.example.com")
    assert (code, reply[:5]) == RELAY


def test_auth_is_not_offered_on_the_backbone_and_does_not_open_the_relay(backbone, bob):
    """The backbone has no accounts: AUTH is not offered even after STARTTLS, a client trying
    anyway gets 504, and relaying stays refused."""
    import base64
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    token = base64.b64encode(b"\0alice@" + HOSTED.encode() + b"\0correct horse battery")
    with _client(backbone) as client:
        client.starttls(context=context)
        client.ehlo("relay-tester.example.com")
        assert not client.has_extn("auth")
        code, reply = client.docmd("AUTH", "PLAIN " + token.decode())
        assert (code, reply[:5]) == (504, b"5.5.4")
        client.mail("spammer@elsewhere.example.com")
        code, reply = client.rcpt("someone@elsewhere.example.com")
    assert (code, reply[:5]) == RELAY


def test_a_long_session_from_a_partner_is_not_cut_off_by_per_session_limits(backbone, bob):
    """The 100-recipient limit is per transaction (RFC 5321 4.5.3.1.8); a partner HISP may send
    many messages over one session, so 150 transactions in a row must all be accepted."""
    with _client(backbone) as client:
        for _ in range(150):
            assert client.mail("partner@elsewhere.example.com")[0] == 250
            assert client.docmd(f"RCPT TO:<bob@{HOSTED}>")[0] == 250
            assert client.rset()[0] == 250
