"""Automatic logoff (HIPAA 164.312(a)(2)(iii)), the server's half: the page learns the idle
timeout, "Stay signed in" slides the session forward, and the page's own sign-out is audited and
explained. The browser half is tests/e2e/test_idle_logoff.py."""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.test.signals import template_rendered
from django.utils import timezone

from hisp.models import AuditEvent
from tests.factories import MailboxEntryFactory
from tests.webmail.personas import Persona

KEEP_ALIVE = "/mail/keep-alive/"
IDLE_LOGOUT = "/mail/logout/idle/"


def _expiry(client: Client):
    return Session.objects.get(session_key=client.session.session_key).expire_date


def test_the_layout_carries_the_idle_timeout_and_loads_the_script(alice, alice_client, settings):
    settings.SESSION_COOKIE_AGE = 420
    entry = MailboxEntryFactory(address=alice.address)
    for url in ("/mail/", f"/mail/m/{entry.pk}/"):
        page = alice_client.get(url, follow=True).content.decode()
        assert re.search(r'<form id="idle-logoff"[^>]*data-idle-seconds="420"', page)
        assert 'data-keep-alive-url="/mail/keep-alive/"' in page
        assert 'role="alertdialog"' in page
        assert "webmail/idle" in page and ".js" in page


def test_the_layout_uses_the_configured_default(alice_client):
    page = alice_client.get("/mail/", follow=True).content.decode()
    seconds = int(settings.HISP_SESSION_IDLE_TIMEOUT.total_seconds())
    assert f'data-idle-seconds="{seconds}"' in page


def test_the_sign_in_page_has_no_logoff_timer(db):
    page = Client().get("/mail/login/").content.decode()
    assert "idle-logoff" not in page


def test_keep_alive_refuses_an_anonymous_visitor(db):
    response = Client().post(KEEP_ALIVE)
    assert response.status_code == 302
    assert response["Location"].startswith("/mail/login/")


def test_keep_alive_refuses_a_password_only_session(alice):
    client = Client()
    client.force_login(alice.user, backend="django.contrib.auth.backends.ModelBackend")
    response = client.post(KEEP_ALIVE)
    assert response.status_code == 302
    assert response["Location"].startswith("/mail/login/code/")


def test_keep_alive_answers_204_uncached_and_extends_the_session(alice_client):
    Session.objects.filter(session_key=alice_client.session.session_key).update(
        expire_date=timezone.now() + timedelta(seconds=30))
    before = _expiry(alice_client)
    response = alice_client.post(KEEP_ALIVE)
    assert response.status_code == 204
    assert response.content == b""
    assert "no-store" in response["Cache-Control"]
    after = _expiry(alice_client)
    assert after > before
    assert after >= timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE - 5)
    assert int(response.cookies[settings.SESSION_COOKIE_NAME]["max-age"]) == (
        settings.SESSION_COOKIE_AGE)


def test_keep_alive_is_post_only(alice_client):
    assert alice_client.get(KEEP_ALIVE).status_code == 405


def test_keep_alive_after_the_server_ended_the_session_does_not_revive_it(alice_client):
    Session.objects.filter(session_key=alice_client.session.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1))
    response = alice_client.post(KEEP_ALIVE)
    assert response.status_code == 302
    assert alice_client.get("/mail/")["Location"].startswith("/mail/login/")


def test_keep_alive_needs_the_csrf_token(alice):
    from tests.webmail.personas import signed_in

    client = signed_in(alice)
    client.handler.enforce_csrf_checks = True
    assert client.post(KEEP_ALIVE).status_code == 403


def test_idle_logout_ends_the_session_audits_it_and_explains(alice: Persona, alice_client,
                                                              settings):
    settings.SESSION_COOKIE_AGE = 900
    response = alice_client.post(IDLE_LOGOUT, follow=True)
    assert response.redirect_chain[-1][0].startswith("/mail/login/")
    assert "You were signed out after 15 minutes without activity." in (
        response.content.decode())
    assert alice_client.get("/mail/")["Location"].startswith("/mail/login/")
    event = AuditEvent.objects.get(action="auth.sign-out")
    assert event.actor == alice.user
    assert event.detail.get("reason") == "idle"


def test_idle_logout_names_seconds_for_a_short_timeout(alice_client, settings):
    settings.SESSION_COOKIE_AGE = 8
    response = alice_client.post(IDLE_LOGOUT, follow=True)
    assert "You were signed out after 8 seconds without activity." in response.content.decode()


def test_the_ordinary_sign_out_carries_no_idle_reason(alice_client):
    alice_client.post("/mail/logout/")
    event = AuditEvent.objects.get(action="auth.sign-out")
    assert "reason" not in event.detail


def test_idle_logout_after_the_server_ended_the_session_still_explains(alice_client):
    Session.objects.filter(session_key=alice_client.session.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1))
    response = alice_client.post(IDLE_LOGOUT, follow=True)
    assert response.status_code == 200
    assert "without activity" in response.content.decode()
    assert not AuditEvent.objects.filter(action="auth.sign-out").exists()


def test_idle_logout_is_post_only(alice_client):
    assert alice_client.get(IDLE_LOGOUT).status_code == 405
    assert alice_client.get("/mail/").status_code in (200, 302)
    assert "_auth_user_id" in alice_client.session


@contextmanager
def _signed_out_elsewhere_while_rendering():
    """The session is deleted (a sign-out in another tab) after the request has read it and
    before it answers: the moment Django's own middleware turns into 400 Bad Request."""

    def end_the_session(sender, context, **kwargs):
        request = context.get("request")
        if request is not None:
            request.session.get("_auth_user_id")  # read, as every signed-in page reads it
        Session.objects.all().delete()

    template_rendered.connect(end_the_session)
    try:
        yield
    finally:
        template_rendered.disconnect(end_the_session)


def _cookie_removed(response) -> bool:
    cookie = response.cookies.get(settings.SESSION_COOKIE_NAME)
    return cookie is not None and cookie["max-age"] == 0 and cookie.value == ""


def test_a_page_whose_session_ends_meanwhile_goes_to_sign_in_not_bad_request(alice, alice_client,
                                                                               caplog):
    entry = MailboxEntryFactory(address=alice.address,
                                message__text="Potassium 6.1 mmol/L")
    with _signed_out_elsewhere_while_rendering():
        response = alice_client.get(f"/mail/m/{entry.pk}/")
    assert response.status_code == 302
    assert response["Location"] == f"/mail/login/?next=/mail/m/{entry.pk}/"
    assert b"Potassium" not in response.content  # what was rendered for the ended session
    assert "no-store" in response["Cache-Control"]
    assert _cookie_removed(response)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # Nothing revived the session: the next request is a stranger's.
    assert alice_client.get("/mail/")["Location"].startswith("/mail/login/")


def test_the_sign_in_page_reached_as_another_tab_signs_out_loads_again(alice_client):
    with _signed_out_elsewhere_while_rendering():
        response = alice_client.get("/mail/login/?next=/mail/compose/")
    assert response.status_code == 302
    assert response["Location"] == "/mail/login/?next=/mail/compose/"
    assert _cookie_removed(response)
    again = alice_client.get(response["Location"])
    assert again.status_code == 200
    assert b"Sign in" in again.content


def test_a_form_sent_as_the_session_ends_lands_on_sign_in(alice_client):
    with _signed_out_elsewhere_while_rendering():
        response = alice_client.post("/mail/compose/", {"subject": "Jones"})  # re-shown
    assert response.status_code == 302
    assert response["Location"] == "/mail/login/"
    assert _cookie_removed(response)
