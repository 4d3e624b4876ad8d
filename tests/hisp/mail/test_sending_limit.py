"""HISP_SEND_RECIPIENTS_PER_HOUR: what one hosted address may send in any hour through the
webmail, the submission port and the mail API, so that a stolen password sends that much at
most. A refusal stores nothing and says when the message can go; the operator's own sends, a
client's retry of a message already taken, and mail older than an hour do not count."""

from __future__ import annotations

import smtplib
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from hisp.models import AppPassword, AuditEvent, Message
from hisp.services import compose
from hisp.smtp.credentials import app_password_hash
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.test_submission import PASSWORD, _message
from tests.hisp.mail.test_submission import _client as submission_client
from tests.webmail.api.conftest import basic

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _limit(settings):
    settings.HISP_SEND_RECIPIENTS_PER_HOUR = 5


def _user():
    return get_user_model().objects.get(username=f"alice@{HOSTED}")


def _submit(alice, recipients: list[str], *, actor=None, message_id: str | None = None):
    extra = f"Message-ID: {message_id}\r\n" if message_id else ""
    raw = (f"From: {alice.address}\r\nTo: {', '.join(recipients)}\r\n{extra}"
           "Subject: results\r\n\r\nHello\r\n").encode()
    return compose.submit(address=alice.address, raw=raw, actor=actor or _user(), peer="test")


def _partners(*names: str) -> list[str]:
    return [f"{name}@partner.example.net" for name in names]


def test_recipients_past_the_hours_limit_are_refused_with_the_time_to_wait(alice):
    _submit(alice, _partners("a", "b"))
    _submit(alice, _partners("c", "d"))
    with pytest.raises(compose.SendingLimited) as refused:
        _submit(alice, _partners("e", "f"))
    assert "has sent to 4 recipients in the last hour" in str(refused.value)
    assert "allows 5" in str(refused.value) and "60 minutes" in str(refused.value)
    assert 3500 < refused.value.retry_after <= 3600
    assert Message.objects.count() == 2  # the refused one left nothing behind
    # ... but the refusal itself is in the audit log, for staff to see a stolen password at work.
    [event] = AuditEvent.objects.filter(action="message.send-limited")
    assert event.actor == _user() and event.object_id == str(alice.pk)
    assert event.detail["recipients"] == 2 and event.detail["limit"] == 5
    assert event.detail["sender"] == alice.address and event.detail["via"] == "test"
    _submit(alice, _partners("e"))  # one more fits exactly
    assert Message.objects.count() == 3


def test_the_wait_is_until_enough_of_the_hour_has_aged_out(alice):
    first = _submit(alice, _partners("a", "b"))
    _submit(alice, _partners("c", "d"))
    Message.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(minutes=50))
    with pytest.raises(compose.SendingLimited) as refused:
        _submit(alice, _partners("e", "f"))
    assert 540 < refused.value.retry_after <= 600  # the first message leaves the hour in 10 min
    Message.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(minutes=61))
    _submit(alice, _partners("e", "f"))


def test_a_message_over_the_limit_by_itself_is_refused_for_good(alice):
    with pytest.raises(compose.SubmissionError) as refused:
        _submit(alice, _partners("a", "b", "c", "d", "e", "f"))
    assert not isinstance(refused.value, compose.SendingLimited)
    assert "at most 5 recipients in an hour, and this message has 6" in str(refused.value)


def test_the_operator_a_clients_retry_another_sender_and_0_are_not_limited(alice, bob, settings):
    _submit(alice, _partners("a", "b", "c", "d"), message_id="<kept@clinic>")
    # The operator's manage.py send (an actor that is no user) is not counted or refused.
    _submit(alice, _partners("e", "f", "g"), actor="cli")
    # A client resending a message we already took gets it back, not a refusal.
    again = _submit(alice, _partners("a", "b", "c", "d"), message_id="<kept@clinic>")
    assert Message.objects.filter(pk=again.pk).count() == 1
    # Another address has its own hour.
    user = get_user_model().objects.create_user(username="bob-user", password=PASSWORD)
    raw = (f"From: {bob.address}\r\nTo: x@partner.example.net\r\nSubject: s\r\n\r\nx\r\n").encode()
    compose.submit(address=bob.address, raw=raw, actor=user, peer="test")
    settings.HISP_SEND_RECIPIENTS_PER_HOUR = 0
    _submit(alice, _partners("h", "i", "j", "k", "l", "m"))


def test_the_submission_port_answers_451_4_7_1_and_the_client_keeps_the_message(
    submission, alice
):
    _submit(alice, _partners("a", "b", "c", "d", "e"))
    with submission_client(submission) as client:
        client.login(alice.address, PASSWORD)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(alice.address, ["carol@partner.example.net"], _message(alice.address))
    assert refused.value.smtp_code == 451
    assert refused.value.smtp_error.startswith(b"4.7.1 ")
    assert b"can be sent in" in refused.value.smtp_error
    assert Message.objects.count() == 1


def test_the_mail_api_answers_429_with_retry_after(alice):
    clear = "alice-ehr-app-password"
    AppPassword.objects.create(user=_user(), name="EHR", password_hash=app_password_hash(clear))
    program = Client(HTTP_AUTHORIZATION=basic(alice.address, clear))
    _submit(alice, _partners("a", "b", "c", "d", "e"))
    response = program.post("/api/v1/messages", content_type="application/json", data={
        "from": alice.address, "to": ["carol@partner.example.net"], "text": "x"})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "sending-limit"
    assert 3500 < int(response["Retry-After"]) <= 3600
    assert Message.objects.count() == 1


def test_the_webmail_says_why_and_keeps_what_was_written(alice, settings):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = _user()
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    browser = Client()
    browser.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    session = browser.session
    session["otp_device_id"] = device.persistent_id
    session.save()
    _submit(alice, _partners("a", "b", "c", "d", "e"))
    response = browser.post("/mail/compose/", {
        "sender": alice.pk, "to": "carol@partner.example.net", "cc": "", "subject": "Referral",
        "body": "Please see Mr Jones.", "delivery_notification": "on"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "has sent to 5 recipients in the last hour" in page
    assert "Please see Mr Jones." in page
    assert Message.objects.count() == 1


def test_a_negative_limit_stops_the_start_naming_the_setting(tmp_path):
    from tests.hisp.mail.test_smtp_review3_limits import start_outcomes

    bad, unlimited = start_outcomes(
        tmp_path, ["HISP_SEND_RECIPIENTS_PER_HOUR=-1", "HISP_SEND_RECIPIENTS_PER_HOUR=0"],
        unset="HISP_SEND_",
    )
    assert "HISP_SEND_RECIPIENTS_PER_HOUR must be a whole number of at least 0" in bad
    assert unlimited == "started"
