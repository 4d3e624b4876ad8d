from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import AppPassword, AuditEvent
from hisp.smtp.credentials import app_password_hash
from tests.factories import AddressGrantFactory, UserFactory
from tests.webmail.otp import current_code
from tests.webmail.personas import PASSWORD


def _password_step(client: Client, username: str, password: str = PASSWORD):
    return client.post("/mail/login/", {"username": username, "password": password})


def test_it_sends_anonymous_visitors_to_sign_in(db):
    response = Client().get("/mail/")
    assert response.status_code == 302
    assert response["Location"].startswith("/mail/login/")


def test_it_asks_for_the_code_after_the_password(alice):
    client = Client()
    response = _password_step(client, "alice")
    assert response.status_code == 302
    response = client.get("/mail/")
    assert response.status_code == 302
    assert response["Location"].startswith("/mail/login/code/")


def test_it_refuses_mail_pages_with_only_the_password(alice):
    client = Client()
    _password_step(client, "alice")
    response = client.get(f"/mail/a/{alice.address.pk}/inbox/")
    assert response.status_code == 302
    assert "/mail/login/code/" in response["Location"]


def test_it_signs_in_with_a_correct_code(alice):
    client = Client()
    _password_step(client, "alice")
    response = client.post("/mail/login/code/", {"token": current_code(alice.device), "next": "/mail/"})
    assert response.status_code == 302
    assert response["Location"] == "/mail/"
    assert client.get(f"/mail/a/{alice.address.pk}/inbox/").status_code == 200
    assert AuditEvent.objects.filter(action="auth.sign-in", actor=alice.user).exists()


def test_it_rejects_a_wrong_code(alice):
    client = Client()
    _password_step(client, "alice")
    good = current_code(alice.device)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    response = client.post("/mail/login/code/", {"token": wrong})
    assert response.status_code == 200
    assert b"not right" in response.content
    assert client.get(f"/mail/a/{alice.address.pk}/inbox/").status_code == 302
    assert AuditEvent.objects.filter(action="auth.otp-failed").exists()


def test_it_ignores_an_offsite_next_after_the_code(alice):
    client = Client()
    _password_step(client, "alice")
    response = client.post("/mail/login/code/",
                           {"token": current_code(alice.device), "next": "https://evil.example/"})
    assert response["Location"] == "/mail/"


def test_it_enrols_a_user_without_a_device_with_a_qr_code(db):
    user = UserFactory(username="dora")
    client = Client()
    _password_step(client, "dora")
    response = client.get("/mail/")
    assert response["Location"].startswith("/mail/login/enrol/")
    page = client.get("/mail/login/enrol/")
    assert page.status_code == 200
    assert b"<svg" in page.content
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    response = client.post("/mail/login/enrol/", {"token": current_code(device)})
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    assert client.get("/mail/").status_code in (200, 302)
    assert "/login/" not in client.get("/mail/").get("Location", "")


def test_it_keeps_the_same_secret_across_enrolment_page_loads(db):
    user = UserFactory(username="erin")
    client = Client()
    _password_step(client, "erin")
    client.get("/mail/login/enrol/")
    client.get("/mail/login/enrol/")
    assert TOTPDevice.objects.filter(user=user).count() == 1


def test_it_refuses_enrolment_with_a_wrong_code(db):
    user = UserFactory(username="fay")
    client = Client()
    _password_step(client, "fay")
    client.get("/mail/login/enrol/")
    device = TOTPDevice.objects.get(user=user)
    wrong = f"{(int(current_code(device)) + 1) % 1_000_000:06d}"
    response = client.post("/mail/login/enrol/", {"token": wrong})
    assert response.status_code == 200
    device.refresh_from_db()
    assert not device.confirmed


def test_it_does_not_let_a_password_only_session_enrol_a_second_device(alice):
    client = Client()
    _password_step(client, "alice")
    response = client.get("/mail/login/enrol/")
    assert response["Location"] == "/mail/login/code/"


def test_it_locks_out_after_repeated_wrong_passwords(alice):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _password_step(client, "alice", "wrong password!")
    response = _password_step(client, "alice")
    assert response.status_code in (403, 429)
    assert b"Sign-in paused" in response.content
    assert "_auth_user_id" not in client.session


def test_it_expires_idle_sessions_after_the_configured_timeout(alice_client):
    idle = int(settings.HISP_SESSION_IDLE_TIMEOUT.total_seconds())
    response = alice_client.get("/mail/")
    # Every request slides the expiry forward by the idle timeout, and no further.
    assert int(response.cookies[settings.SESSION_COOKIE_NAME]["max-age"]) == idle
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    Session.objects.filter(session_key=alice_client.session.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1))
    assert alice_client.get("/mail/")["Location"].startswith("/mail/login/")


def test_wrong_codes_count_towards_the_lockout(alice):
    client = Client()
    _password_step(client, "alice")
    good = current_code(alice.device)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    for _ in range(settings.AXES_FAILURE_LIMIT):
        alice.device.throttle_reset()  # past django-otp's own back-off, to reach the limit
        client.post("/mail/login/code/", {"token": wrong})
    client.post("/mail/logout/")
    response = _password_step(Client(), "alice")
    assert response.status_code in (403, 429)


def test_it_has_no_self_service_password_reset(db):
    assert Client().get("/mail/password-reset/").status_code == 404
    page = Client().get("/mail/login/")
    assert b"administrator" in page.content


def test_it_signs_out(alice_client):
    response = alice_client.post("/mail/logout/")
    assert response.status_code == 302
    assert alice_client.get("/mail/").status_code == 302


def test_it_creates_an_app_password_shown_once_and_stored_hashed(alice, alice_client):
    response = alice_client.post("/mail/account/app-passwords/", {"name": "Thunderbird"})
    assert response.status_code == 200
    clear = response.context["created_password"]
    assert clear.encode() in response.content
    row = AppPassword.objects.get(user=alice.user)
    assert row.password_hash != clear
    assert check_password(clear, row.password_hash)
    # With its selector as salt, so the submission port finds it without a hash per app
    # password (timing that told how many a user has: hisp.smtp.credentials).
    assert row.password_hash == app_password_hash(clear)
    again = alice_client.get("/mail/account/app-passwords/")
    assert clear.encode() not in again.content


def test_it_deletes_an_app_password(alice, alice_client):
    alice_client.post("/mail/account/app-passwords/", {"name": "Outlook"})
    row = AppPassword.objects.get(user=alice.user)
    assert alice_client.post(f"/mail/account/app-passwords/{row.pk}/delete/").status_code == 302
    assert not AppPassword.objects.filter(pk=row.pk).exists()


def test_outsider_gets_404_for_another_users_app_password(alice, alice_client, charlie_client):
    alice_client.post("/mail/account/app-passwords/", {"name": "Outlook"})
    row = AppPassword.objects.get(user=alice.user)
    assert charlie_client.post(f"/mail/account/app-passwords/{row.pk}/delete/").status_code == 404
    assert AppPassword.objects.filter(pk=row.pk).exists()


def test_it_changes_the_password_and_stays_signed_in(alice, alice_client):
    response = alice_client.post("/mail/account/password/", {
        "old_password": PASSWORD, "new_password1": "a much better secret 42",
        "new_password2": "a much better secret 42",
    })
    assert response.status_code == 302
    alice.user.refresh_from_db()
    assert alice.user.check_password("a much better secret 42")
    assert alice_client.get(f"/mail/a/{alice.address.pk}/inbox/").status_code == 200


def test_a_user_without_a_mailbox_sees_an_explanation(db):
    from tests.webmail.personas import make_persona, signed_in

    persona = make_persona("gus", "clinic.example")
    persona.address.grants.all().delete()
    response = signed_in(persona).get("/mail/")
    assert response.status_code == 200
    assert b"No mailbox yet" in response.content


def test_a_delegate_sees_the_shared_mailbox(alice, bob):
    AddressGrantFactory(user=bob.user, address=alice.address, role="read")
    from tests.webmail.personas import signed_in

    response = signed_in(bob).get(f"/mail/a/{alice.address.pk}/inbox/")
    assert response.status_code == 200


def test_it_backs_off_after_a_wrong_code(alice):
    client = Client()
    _password_step(client, "alice")
    good = current_code(alice.device)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    client.post("/mail/login/code/", {"token": wrong})
    response = client.post("/mail/login/code/", {"token": good})  # at once: still throttled
    # The wait said is the real one (1 s after one wrong code), not a flat "a minute".
    assert b"Too many wrong codes in a row. Wait 1 second," in response.content
    assert client.get(f"/mail/a/{alice.address.pk}/inbox/").status_code == 302
    time.sleep(1.1)  # then the code the app shows now is taken
    response = client.post("/mail/login/code/", {"token": current_code(alice.device)})
    assert response.status_code == 302
    assert client.get(f"/mail/a/{alice.address.pk}/inbox/").status_code == 200


def test_the_app_passwords_page_says_what_to_give_an_ehr_system(alice, alice_client, settings):
    settings.HISP_WEB_URL = "https://hisp.clinic.example"
    page = alice_client.get("/mail/account/app-passwords/").content.decode()
    assert "<code>https://hisp.clinic.example/api/v1/</code>" in page
    assert "<code>https://hisp.clinic.example/api/v1/openapi.json</code>" in page
    assert f"<code>{alice.user.username}</code>" in page
