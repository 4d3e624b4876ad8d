"""Who may call the mail API: HTTP Basic with the mail ports' credentials, the mail ports'
guessing limits, no session cookie, no form bodies, JSON errors throughout."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from hisp.models import AddressGrant
from hisp.smtp.credentials import FAILURE_LIMIT
from tests.factories import AddressFactory, AddressGrantFactory, UserFactory
from tests.webmail.api.conftest import basic
from tests.webmail.personas import PASSWORD, Persona, signed_in

pytestmark = pytest.mark.django_db
URL = "/api/v1/mailboxes"


def _error(response) -> str:
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]["code"]


def test_an_app_password_lists_the_callers_mailboxes_and_nobody_elses(alice, bob, alice_api):
    delegated = AddressFactory(address="front-desk@clinic.example")
    AddressGrantFactory(user=alice.user, address=delegated, role=AddressGrant.Role.READ)
    response = alice_api.get(URL)
    assert response.status_code == 200
    body = response.json()["mailboxes"]
    assert [m["address"] for m in body] == ["alice@clinic.example", "front-desk@clinic.example"]
    assert body[0]["may_send"] is True and body[0]["role"] == "owner"
    assert body[1]["may_send"] is False and body[1]["role"] == "read"
    assert "bob@clinic.example" not in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert "Set-Cookie" not in response.headers and not response.cookies


def test_no_credentials_is_401_with_a_basic_challenge(alice):
    response = Client().get(URL)
    assert response.status_code == 401
    assert _error(response) == "unauthorised"
    assert response["WWW-Authenticate"].startswith('Basic realm="HISP mail API"')


@pytest.mark.parametrize("header", [
    "Bearer abc", "Basic", "Basic !!!not-base64", "Basic " + "YWxpY2U=",  # "alice", no colon
    "Basic " + "/w==",  # not UTF-8
])
def test_malformed_authorisation_is_401_not_an_error(alice, header):
    response = Client(HTTP_AUTHORIZATION=header).get(URL)
    assert response.status_code == 401 and _error(response) == "unauthorised"


def test_a_user_with_a_second_factor_cannot_use_the_account_password(alice):
    response = Client(HTTP_AUTHORIZATION=basic("alice", PASSWORD)).get(URL)
    assert response.status_code == 401


def test_a_user_without_a_second_factor_uses_the_account_password():
    user = UserFactory(username="dave")
    user.set_password(PASSWORD)
    user.save()
    AddressGrantFactory(user=user, address=AddressFactory(address="dave@clinic.example"))
    response = Client(HTTP_AUTHORIZATION=basic("dave", PASSWORD)).get(URL)
    assert response.status_code == 200
    assert response.json()["mailboxes"][0]["address"] == "dave@clinic.example"


def test_the_webmail_session_cookie_alone_opens_nothing(alice: Persona):
    response = signed_in(alice).get(URL)
    assert response.status_code == 401


def test_guessing_is_stopped_by_the_mail_ports_limit(alice, alice_api):
    wrong = Client(HTTP_AUTHORIZATION=basic("alice", "not the password"), REMOTE_ADDR="192.0.2.9")
    codes = [wrong.get(URL).status_code for _ in range(FAILURE_LIMIT + 1)]
    assert codes[:FAILURE_LIMIT] == [401] * FAILURE_LIMIT
    assert codes[-1] == 429
    last = wrong.get(URL)
    assert _error(last) == "too-many-attempts" and int(last["Retry-After"]) > 0


def test_a_form_post_is_refused_before_credentials_are_even_read(alice, alice_api):
    # A cross-site form can send only form or text bodies: never one of ours.
    for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         "text/plain"):
        response = alice_api.post("/api/v1/messages", data="to=eve@elsewhere.example",
                                  content_type=content_type)
        assert response.status_code == 415, content_type
        assert _error(response) == "unsupported-media-type"


def test_a_wrong_method_is_405_with_allow(alice_api):
    response = alice_api.delete(URL)
    assert response.status_code == 405 and response["Allow"] == "GET"


def test_a_deployment_on_https_refuses_plain_http(alice_api, settings):
    settings.HISP_SECURE_COOKIES = True
    settings.SESSION_COOKIE_SECURE = True
    response = alice_api.get(URL)
    assert response.status_code == 403 and _error(response) == "https-required"
    assert alice_api.get(URL, secure=True).status_code == 200


def test_a_deactivated_user_is_refused(alice, alice_api):
    alice.user.is_active = False
    alice.user.save()
    assert alice_api.get(URL).status_code == 401


def test_an_unknown_route_under_the_api_is_not_a_500(alice_api):
    assert alice_api.get("/api/v1/nothing-here").status_code == 404


@pytest.fixture
def hashes(monkeypatch):
    """How many password hashes were computed (check and make), the real hasher still doing
    each: observed, not replaced."""
    from django.contrib.auth import hashers

    count = {"n": 0}
    real_check, real_make = hashers.check_password, hashers.make_password

    def counted_check(*args, **kwargs):
        count["n"] += 1
        return real_check(*args, **kwargs)

    def counted_make(*args, **kwargs):
        count["n"] += 1
        return real_make(*args, **kwargs)

    from hisp.smtp import credentials as module

    monkeypatch.setattr(module, "check_password", counted_check)
    monkeypatch.setattr(module, "make_password", counted_make)
    return count


def test_an_accepted_app_password_is_answered_again_without_hashing(alice, alice_api, hashes):
    assert alice_api.get(URL).status_code == 200
    first = hashes["n"]
    assert first >= 2
    for _ in range(3):
        assert alice_api.get(URL).status_code == 200
    assert hashes["n"] == first


def test_deleting_the_app_password_ends_its_use_at_once(alice, alice_api):
    from hisp.models import AppPassword

    assert alice_api.get(URL).status_code == 200
    AppPassword.objects.filter(user=alice.user).delete()
    assert alice_api.get(URL).status_code == 401


def test_a_user_deactivated_after_an_accepted_request_is_refused_at_once(alice, alice_api):
    assert alice_api.get(URL).status_code == 200
    alice.user.is_active = False
    alice.user.save()
    assert alice_api.get(URL).status_code == 401


def test_a_replaced_app_password_row_is_not_taken_for_the_remembered_one(alice, alice_api):
    from hisp.models import AppPassword
    from hisp.smtp.credentials import app_password_hash

    assert alice_api.get(URL).status_code == 200
    AppPassword.objects.filter(user=alice.user).update(password_hash=app_password_hash("other"))
    assert alice_api.get(URL).status_code == 401


def test_the_account_password_is_hashed_on_every_request(hashes):
    user = UserFactory(username="dave")
    user.set_password(PASSWORD)
    user.save()
    client = Client(HTTP_AUTHORIZATION=basic("dave", PASSWORD))
    assert client.get(URL).status_code == 200
    first = hashes["n"]
    assert client.get(URL).status_code == 200
    assert hashes["n"] == 2 * first


def test_a_wrong_password_is_never_taken_from_the_memory_of_a_right_one(alice, alice_api):
    assert alice_api.get(URL).status_code == 200
    wrong = Client(HTTP_AUTHORIZATION=basic("alice", "alice-ehr-app-passwordX"))
    assert wrong.get(URL).status_code == 401


def test_json_nested_past_the_parsers_stack_is_400(alice_api):
    deep = "[" * 50_000 + "]" * 50_000
    response = alice_api.post("/api/v1/messages", data=deep, content_type="application/json")
    assert response.status_code == 400 and _error(response) == "bad-json"


@pytest.mark.django_db(transaction=True)
def test_a_database_that_refuses_writes_is_503_and_nothing_is_sent(alice, alice_api):
    from django.db import connection

    from hisp.models import Message

    assert alice_api.get(URL).status_code == 200  # signed in (and remembered) while it could
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION default_transaction_read_only = on")
    try:
        response = alice_api.post("/api/v1/messages", content_type="application/json", data={
            "from": "alice@clinic.example", "to": ["dana@partner.example"], "text": "x"})
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION default_transaction_read_only = off")
    assert response.status_code == 503 and _error(response) == "unavailable"
    assert response["Retry-After"] == "30"
    assert not Message.objects.exists()


def _wrapped(body):
    """A view behind api_view, as every API view is, doing ``body()``."""
    from webmail.api.auth import api_view

    @api_view("GET")
    def view(request):
        return body()

    return view


PATIENT = "Jones, J. (MRN " + "1234" * 2 + ")"  # built, so no source line in a log holds it


def test_a_value_the_database_refuses_is_400_not_a_503_to_retry(alice, alice_api, caplog):
    from django.db import connection
    from django.test import RequestFactory

    def refused():
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s::integer", [PATIENT])

    request = RequestFactory().get(URL, HTTP_AUTHORIZATION=alice_api.defaults["HTTP_AUTHORIZATION"])
    response = _wrapped(refused)(request)
    assert response.status_code == 400
    assert json.loads(response.content)["error"]["code"] == "bad-request"
    assert "12341234" not in caplog.text  # the database's message quotes the value: not logged
    assert "DataError" in caplog.text


def test_a_bug_is_a_json_500_and_the_log_names_the_place_not_the_message(alice_api, caplog):
    from django.test import RequestFactory

    def broken():
        raise ValueError(PATIENT)

    request = RequestFactory().get(URL, HTTP_AUTHORIZATION=alice_api.defaults["HTTP_AUTHORIZATION"])
    response = _wrapped(broken)(request)
    assert response.status_code == 500
    assert json.loads(response.content)["error"]["code"] == "internal-error"
    assert "no-store" in response["Cache-Control"]
    assert "12341234" not in caplog.text
    assert "ValueError" in caplog.text and "broken" in caplog.text


def test_a_declared_length_over_the_json_limit_is_413_before_the_body_is_read(alice, alice_api):
    from tests.factories import MailboxEntryFactory
    from webmail.api.auth import MAX_JSON_BYTES

    entry = MailboxEntryFactory(address=alice.address)
    response = alice_api.patch(f"/api/v1/entries/{entry.pk}", data=b"{}",
                               content_type="application/json",
                               CONTENT_LENGTH=str(MAX_JSON_BYTES + 1))
    assert response.status_code == 413 and _error(response) == "too-large"


def test_more_requests_in_a_minute_than_allowed_are_429_for_that_user_only(
    alice, bob, alice_api, bob_api, settings
):
    import time

    settings.HISP_API_REQUESTS_PER_MINUTE = 3
    left = 60 - time.time() % 60
    if left < 5:  # the count is per clock minute: not across its turn
        time.sleep(left + 0.1)
    codes = [alice_api.get(URL).status_code for _ in range(3)]
    last = alice_api.get(URL)
    assert codes == [200, 200, 200]
    assert last.status_code == 429 and _error(last) == "rate-limited"
    assert 1 <= int(last["Retry-After"]) <= 60
    assert bob_api.get(URL).status_code == 200  # another user's programs have their own count
    settings.HISP_API_REQUESTS_PER_MINUTE = 0
    assert alice_api.get(URL).status_code == 200
