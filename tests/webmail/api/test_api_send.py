"""Sending through the mail API (POST /api/v1/messages): a JSON message or a raw one, only as an
address the caller may send as, every wrong field named, refusals of the mail flow passed on,
and Idempotency-Key so a repeated request sends nothing twice, even when both arrive at once."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from django.db import connection, transaction
from django.test import Client

from hisp.models import Address, AddressGrant, AuditEvent, Delivery, MailboxEntry, Message
from tests.factories import AddressGrantFactory
from tests.webmail.api.conftest import api_client
from webmail.models import ApiSubmission

pytestmark = pytest.mark.django_db
URL = "/api/v1/messages"
PDF = b"%PDF-1.7 discharge summary\x00\x01\xff"


def _json(**fields) -> dict:
    body = {"from": "alice@clinic.example", "to": ["dana@partner.example"],
            "subject": "Referral", "text": "Please see the attached."}
    body.update(fields)
    return body


def _post(client: Client, body, *, key: str | None = None, **extra):
    if key is not None:
        extra["HTTP_IDEMPOTENCY_KEY"] = key
    return client.post(URL, data=body, content_type="application/json", **extra)


def _raw(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def _post_raw(client: Client, raw: bytes, **extra):
    return client.post(URL, data=raw, content_type="message/rfc822", **extra)


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]


def _stored(message: Message) -> bytes:
    return bytes(Message.objects.values_list("raw", flat=True).get(pk=message.pk))


def test_a_json_message_is_queued_as_the_sender_with_attachments_and_audit(alice, alice_api):
    body = _json(cc=["erin@partner.example"], bcc=["frank@elsewhere.example"],
                 attachments=[{"filename": "summary.pdf", "content_type": "application/pdf",
                               "content_base64": base64.b64encode(PDF).decode()}])
    response = _post(alice_api, body, REMOTE_ADDR="192.0.2.40")
    assert response.status_code == 202, response.content
    message = Message.objects.get(direction=Message.Direction.OUTBOUND)
    answer = response.json()
    assert answer == {
        "id": message.pk, "message_id": message.message_id,
        "status_url": f"http://testserver/api/v1/messages/{message.pk}",
        "recipients": ["dana@partner.example", "erin@partner.example", "frank@elsewhere.example"],
    }
    assert response["Location"] == answer["status_url"]
    assert message.state == Message.State.QUEUED and message.peer == "api"
    assert message.envelope_from == "alice@clinic.example"
    assert message.envelope_to == answer["recipients"]
    raw = _stored(message)
    assert b"From: Alice <alice@clinic.example>\r\n" in raw
    assert b"To: dana@partner.example\r\n" in raw and b"Cc: erin@partner.example\r\n" in raw
    assert b"Subject: Referral\r\n" in raw and b"Please see the attached." in raw
    assert b"X-DIRECT-FINAL-DESTINATION-DELIVERY" in raw
    assert base64.b64encode(PDF) in raw.replace(b"\r\n", b"") and b"summary.pdf" in raw
    assert b"frank" not in raw  # a blind recipient is in the envelope only
    assert sorted(Delivery.objects.filter(message=message, state="queued")
                  .values_list("recipient", flat=True)) == sorted(answer["recipients"])
    assert MailboxEntry.objects.get(message=message).address == alice.address
    event = AuditEvent.objects.get(action="message.submitted")
    assert event.actor == alice.user and event.client_address == "192.0.2.40"
    assert event.detail["via"] == "api" and event.detail["recipients"] == 3
    assert "Referral" not in str(event.detail)  # no subject in the audit log


def test_without_delivery_notification_the_message_asks_for_none(alice, alice_api):
    assert _post(alice_api, _json(delivery_notification=False)).status_code == 202
    assert b"X-DIRECT-FINAL" not in _stored(Message.objects.get())


def test_a_raw_message_is_sent_as_its_from_address_and_its_bcc_is_dropped(alice, alice_api):
    raw = _raw("From: alice@clinic.example\nTo: dana@partner.example\n"
               "Bcc: frank@elsewhere.example\nSubject: Lab results\n\nAttached.\n")
    response = _post_raw(alice_api, raw)
    assert response.status_code == 202, response.content
    message = Message.objects.get(pk=response.json()["id"])
    assert message.envelope_to == ["dana@partner.example", "frank@elsewhere.example"]
    stored = _stored(message)
    assert b"Subject: Lab results" in stored and b"Bcc" not in stored and b"frank" not in stored
    assert response.json()["message_id"].startswith("<") and message.peer == "api"


def test_a_read_and_send_delegate_sends_as_the_shared_address(alice, bob, bob_api):
    AddressGrantFactory(user=bob.user, address=alice.address, role=AddressGrant.Role.READ_SEND)
    assert _post(bob_api, _json()).status_code == 202
    assert AuditEvent.objects.get(action="message.submitted").actor == bob.user


@pytest.mark.parametrize("case", ["someone-elses", "unknown", "read-only", "inactive"])
def test_only_an_address_with_a_sending_grant_may_send(alice, bob, charlie, alice_api, case):
    sender = {"someone-elses": "charlie@elsewhere.example", "unknown": "nobody@clinic.example",
              "read-only": "bob@clinic.example", "inactive": "alice@clinic.example"}[case]
    if case == "read-only":
        AddressGrantFactory(user=alice.user, address=bob.address, role=AddressGrant.Role.READ)
    if case == "inactive":
        Address.objects.filter(pk=alice.address.pk).update(status=Address.Status.SUSPENDED)
    error = _error(_post(alice_api, _json(**{"from": sender})), 403)
    # One answer whatever the reason: nothing is learnt about addresses not held.
    assert error == {"code": "sender-not-allowed", "message": "you may not send as this address"}
    raw = _raw(f"From: {sender}\nTo: dana@partner.example\nSubject: x\n\nx\n")
    assert _error(_post_raw(alice_api, raw), 403)["code"] == "sender-not-allowed"
    assert not Message.objects.exists()


@pytest.mark.parametrize(("fields", "named"), [
    ({"from": None}, "from"),
    ({"from": 7}, "from"),
    ({"to": "dana@partner.example"}, "to"),
    ({"to": []}, "to"),
    ({"to": ["dana@partner.example", 3]}, "to"),
    ({"to": ["dana@partner.example, eve@elsewhere.example"]}, "to[0]"),
    ({"cc": "erin@partner.example"}, "cc"),
    ({"bcc": ["frank@[127.0.0.1]"]}, "bcc[0]"),
    ({"subject": ["Referral"]}, "subject"),
    ({"text": 12}, "text"),
    ({"attachments": {"filename": "a"}}, "attachments"),
    ({"attachments": ["summary.pdf"]}, "attachments[0]"),
    ({"attachments": [{"filename": "a.pdf", "content_type": "application/pdf"}]},
     "attachments[0].content_base64"),
    ({"attachments": [{"filename": "a.pdf", "content_type": "application/pdf",
                       "content_base64": "JVBERi0x!"}]}, "attachments[0].content_base64"),
    ({"attachments": [{"filename": "a.pdf", "content_type": "application/pdf",
                       "content_base64": "JVBERi0"}]}, "attachments[0].content_base64"),
    ({"attachments": [{"filename": 1, "content_type": "application/pdf",
                       "content_base64": ""}]}, "attachments[0].filename"),
    ({"delivery_notification": "yes"}, "delivery_notification"),
    ({"bcc ": ["frank@elsewhere.example"]}, "bcc "),
])
def test_each_wrong_field_is_named(alice, alice_api, fields, named):
    body = _json(**fields)
    if fields.get("from", "") is None:
        del body["from"]
    error = _error(_post(alice_api, body), 400)
    assert error["code"] == "bad-field"
    assert error["message"].startswith(f"{named}: ")
    assert not Message.objects.exists()


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_400(alice, alice_api, body):
    assert _error(_post(alice_api, body), 400)["code"] == "bad-json"


def test_the_mail_flows_refusal_is_422_with_its_reason(alice, alice_api):
    error = _error(_post(alice_api, _json(subject="Referral\nBcc: eve@elsewhere.example")), 422)
    assert error["code"] == "refused" and "single lines" in error["message"]
    too_many = [f"r{n}@partner.example" for n in range(101)]
    error = _error(_post(alice_api, _json(to=too_many)), 422)
    assert error["code"] == "refused" and "at most 100 recipients" in error["message"]
    raw = _raw("From: alice@clinic.example\nSender: eve@elsewhere.example\n"
               "To: dana@partner.example\nSubject: x\n\nx\n")
    error = _error(_post_raw(alice_api, raw), 422)
    assert error["message"] == "the Sender header, when present, must be alice@clinic.example"
    assert not Message.objects.exists()


@pytest.mark.parametrize("raw", [b"\r\nbody only", b"To: dana@partner.example\r\n\r\nx\r\n",
                                 b"From: alice@clinic.example, eve@elsewhere.example\r\n\r\nx"])
def test_a_raw_message_without_one_from_address_is_refused(alice, alice_api, raw):
    assert _error(_post_raw(alice_api, raw), 422)["code"] == "refused"
    assert not Message.objects.exists()


def test_a_message_too_large_once_protected_is_413(alice, alice_api, settings):
    settings.HISP_MAX_MESSAGE_BYTES = 64 * 1024
    attachment = {"filename": "scan.pdf", "content_type": "application/pdf",
                  "content_base64": base64.b64encode(b"x" * 100_000).decode()}
    error = _error(_post(alice_api, _json(attachments=[attachment])), 413)
    assert error["code"] == "too-large" and "too large" in error["message"]
    assert not Message.objects.exists()


def test_a_body_over_the_upload_cap_is_a_json_413_before_it_is_read(alice, alice_api, settings):
    settings.HISP_MAX_MESSAGE_BYTES = 64 * 1024
    declared = str(64 * 1024 + 1024 * 1024 + 1)
    response = alice_api.post(URL, data=b"{}", content_type="application/json",
                              CONTENT_LENGTH=declared)
    error = _error(response, 413)
    assert error["code"] == "too-large" and "larger than" in error["message"]
    assert not Message.objects.exists()


# Idempotency-Key


def test_a_repeated_request_is_answered_as_the_first_and_sent_once(alice, alice_api):
    first = _post(alice_api, _json(), key="order-4711")
    again = _post(alice_api, _json(), key="order-4711")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true" and again["Location"] == first["Location"]
    assert "Idempotent-Replayed" not in first.headers
    assert Message.objects.count() == 1
    assert ApiSubmission.objects.get().message_id == first.json()["id"]


def test_a_key_reused_for_another_request_is_422(alice, alice_api):
    assert _post(alice_api, _json(), key="order-4711").status_code == 202
    error = _error(_post(alice_api, _json(subject="Another"), key="order-4711"), 422)
    assert error["code"] == "idempotency-key-reused"
    raw = _raw("From: alice@clinic.example\nTo: dana@partner.example\n\nx\n")
    assert _error(_post_raw(alice_api, raw, HTTP_IDEMPOTENCY_KEY="order-4711"), 422)["code"] == (
        "idempotency-key-reused")
    assert Message.objects.count() == 1


def test_keys_belong_to_their_user(alice, bob, alice_api, bob_api):
    assert _post(alice_api, _json(), key="k1").status_code == 202
    assert _post(bob_api, _json(**{"from": "bob@clinic.example"}), key="k1").status_code == 202
    assert Message.objects.count() == 2


def test_a_refused_submission_leaves_its_key_free(alice, alice_api):
    refused = _post(alice_api, _json(subject="two\nlines"), key="order-4712")
    assert _error(refused, 422)["code"] == "refused"
    assert not ApiSubmission.objects.exists()
    assert _post(alice_api, _json(), key="order-4712").status_code == 202


def test_a_key_is_forgotten_after_its_lifetime_and_then_sends_again(alice, alice_api, settings):
    from datetime import timedelta

    from django.utils import timezone

    from hisp.celery import app
    from webmail.api.submissions import KEY_LIFETIME, forget_old_keys

    assert _post(alice_api, _json(), key="order-1").status_code == 202
    assert _post(alice_api, _json(), key="order-2").status_code == 202
    ApiSubmission.objects.filter(key="order-1").update(
        created_at=timezone.now() - KEY_LIFETIME - timedelta(minutes=1))
    assert forget_old_keys() == 1
    assert list(ApiSubmission.objects.values_list("key", flat=True)) == ["order-2"]
    assert _post(alice_api, _json(), key="order-1").status_code == 202  # a new message
    assert _post(alice_api, _json(), key="order-2").status_code == 200  # still remembered
    assert Message.objects.count() == 3
    app.loader.import_default_modules()
    assert "webmail.forget_idempotency_keys" in app.tasks
    assert "webmail.forget_idempotency_keys" in {
        entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}


@pytest.mark.parametrize("key", ["", "x" * 201, "caf\u00e9", "tab\there", "line\x7f"])
def test_a_malformed_key_is_400(alice, alice_api, key):
    assert _error(_post(alice_api, _json(), key=key), 400)["code"] == "bad-idempotency-key"
    assert not Message.objects.exists()


def test_a_200_character_key_is_taken(alice, alice_api):
    assert _post(alice_api, _json(), key="~ " * 100).status_code == 202


def _waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        # Read in the test's open transaction, which would otherwise see one snapshot.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database()")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_two_identical_requests_at_once_send_one_message(alice):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's row locks")
    clients = [api_client(alice), api_client(alice)]
    answers: list = [None, None]

    def post(index: int) -> None:
        try:
            answers[index] = _post(clients[index], _json(), key="order-9")
        finally:
            connection.close()

    # Hold the sender's row: the first request's transaction, its key row and message written,
    # waits on it at COMMIT (the Sent entry's deferred foreign-key check). Only then does the
    # second start, and it must wait on the first's key row (the unique index), not submit
    # alongside: with the key row and the submission in two transactions both would send.
    with transaction.atomic():
        Address.objects.select_for_update().get(pk=alice.address.pk)
        threads = [threading.Thread(target=post, args=(i,)) for i in (0, 1)]
        threads[0].start()
        _wait_for(lambda: _waiting_on_locks() == 1)
        threads[1].start()
        _wait_for(lambda: _waiting_on_locks() == 2)
    for thread in threads:
        thread.join(timeout=30)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 202]
    assert answers[0].json() == answers[1].json()
    assert Message.objects.count() == 1 and ApiSubmission.objects.count() == 1


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the request never reached the lock"
        time.sleep(0.02)

