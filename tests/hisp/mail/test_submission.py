"""The submission port: STARTTLS, then AUTH, then only your own addresses."""

from __future__ import annotations

import smtplib

import pytest
from django.contrib.auth.hashers import make_password
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import AppPassword, Delivery, MailboxEntry, Message
from tests.hisp.mail.conftest import HOSTED
from tests.support.services import unverified_tls as _tls

PASSWORD = "correct horse battery"


def _client(controller, *, tls: bool = True) -> smtplib.SMTP:
    client = smtplib.SMTP(controller.hostname, controller.port, timeout=10)
    client.ehlo("laptop")
    if tls:
        client.starttls(context=_tls())
        client.ehlo("laptop")
    return client


def _message(sender: str, *, extra: str = "") -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: carol@partner.example.net\r\n{extra}"
        "Subject: results\r\n\r\nHello Carol\r\n"
    ).encode()


def test_auth_before_starttls_is_530(submission, alice):
    with _client(submission, tls=False) as client:
        code, _ = client.docmd("AUTH", "PLAIN " + "AGFsaWNlAHNlY3JldA==")
    assert code == 530


def test_mail_before_auth_is_530(submission, alice):
    with _client(submission) as client:
        code, _ = client.mail(alice.address)
    assert code == 530


def test_bad_password_is_535(submission, alice):
    with _client(submission) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            client.login(alice.address, "wrong password")
    assert failure.value.smtp_code == 535


def test_unknown_login_is_535(submission, alice):
    with _client(submission) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            client.login(f"nobody@{HOSTED}", PASSWORD)
    assert failure.value.smtp_code == 535


def test_repeated_failures_are_throttled_even_for_the_right_password(submission, alice):
    for _ in range(5):
        with _client(submission) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login(alice.address, "wrong password")
    with _client(submission) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            client.login(alice.address, PASSWORD)
    assert failure.value.smtp_code == 454


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_mechanisms_accept_the_webmail_password(submission, alice, mechanism):
    with _client(submission) as client:
        client.user, client.password = alice.address, PASSWORD
        authobject = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        code, _ = client.auth(mechanism, authobject, initial_response_ok=mechanism == "PLAIN")
    assert code == 235


def test_user_with_second_factor_needs_an_app_password(submission, alice):
    user = alice.users.get()
    TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    AppPassword.objects.create(user=user, name="laptop", password_hash=make_password("app-pass-123"))
    with _client(submission) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(alice.address, PASSWORD)
    with _client(submission) as client:
        assert client.login(alice.address, "app-pass-123")[0] == 235
    assert AppPassword.objects.get().last_used_at is not None


def test_sender_must_be_an_address_the_user_may_send_from(submission, alice, bob):
    with _client(submission) as client:
        client.login(alice.address, PASSWORD)
        code, reply = client.mail(bob.address)
    assert (code, reply[:5]) == (550, b"5.7.1")


def test_from_header_must_match_the_sender(submission, alice, bob):
    with _client(submission) as client:
        client.login(alice.address, PASSWORD)
        client.mail(alice.address)
        client.rcpt("carol@partner.example.net")
        code, reply = client.data(_message(bob.address))
    assert (code, reply[:5]) == (550, b"5.7.1")
    assert Message.objects.count() == 0


def test_bare_lf_is_refused_on_submission(submission, alice):
    with _client(submission) as client:
        client.login(alice.address, PASSWORD)
        client.mail(alice.address)
        client.rcpt("carol@partner.example.net")
        client.send(b"DATA\r\n")
        client.getreply()
        client.send(b"From: " + alice.address.encode() + b"\r\n\r\nbare\nlf\r\n.\r\n")
        code, _ = client.getreply()
    assert code == 550
    assert Message.objects.count() == 0


def test_submitted_message_enters_the_outbound_pipeline(submission, alice):
    with _client(submission) as client:
        client.login(alice.address, PASSWORD)
        client.mail(alice.address)
        client.rcpt("carol@partner.example.net")
        client.rcpt("dave@partner.example.net")
        code, _ = client.data(_message(alice.address, extra="Bcc: dave@partner.example.net\r\n"))
    assert code == 250
    message = Message.objects.get()
    assert message.direction == Message.Direction.OUTBOUND
    assert message.state == Message.State.QUEUED
    assert message.message_id.startswith("<") and message.message_id.endswith(">")
    assert b"Bcc:" not in bytes(message.raw)  # RFC 5322 3.6.3
    assert sorted(message.deliveries.values_list("recipient", flat=True)) == [
        "carol@partner.example.net", "dave@partner.example.net"]
    assert set(message.deliveries.values_list("state", flat=True)) == {Delivery.State.QUEUED}
    assert MailboxEntry.objects.get().folder == MailboxEntry.SystemFolder.SENT
