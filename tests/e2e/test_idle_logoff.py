"""Automatic logoff in the browser (HIPAA 164.312(a)(2)(iii)): a message left open is taken off
the screen and the session ended when the idle timeout runs out, after an accessible warning whose
"Stay signed in" really keeps the session. The timeout is cut to a few seconds; the live server
reads SESSION_COOKIE_AGE on each request."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from hisp.models import AuditEvent
from tests.e2e.test_accessibility_webmail import Audit
from tests.e2e.test_webmail import sign_in
from tests.e2e.watch import script_errors
from tests.factories import MailboxEntryFactory, MessageFactory
from tests.webmail.personas import make_persona

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
IDLE = 25  # seconds: the warning shows for the last fifth, 5 s, time enough to click on a busy machine
BODY = "Potassium 6.1 mmol/L, repeat today."


def _short_timeout(settings) -> None:
    settings.HISP_SESSION_IDLE_TIMEOUT = timedelta(seconds=IDLE)
    settings.SESSION_COOKIE_AGE = IDLE


def _open_message(page, settings):
    alice = make_persona("alice", "clinic.example")
    message = MessageFactory(subject="Lab result for Jones", text=BODY)
    entry = MailboxEntryFactory(address=alice.address, message=message,
                                subject="Lab result for Jones")
    sign_in(page, alice)
    _short_timeout(settings)  # after sign-in: the code step must not race the short timeout
    page.get_by_role("link", name="Lab result for Jones").click()
    page.locator("#message-body").wait_for()
    return alice, entry


def test_an_open_message_warns_keeps_on_request_then_signs_out(page, settings):
    errors = script_errors(page)
    alice, entry = _open_message(page, settings)
    loaded = time.monotonic()
    warning = page.get_by_role("alertdialog")
    warning.wait_for(timeout=IDLE * 1000)
    assert warning.is_visible()
    assert "You will be signed out in" in warning.inner_text()
    assert "to protect patient information" in warning.inner_text()
    assert page.evaluate(
        "document.activeElement.closest('[role=alertdialog]') !== null")
    warning.get_by_role("button", name="Stay signed in").click()
    warning.wait_for(state="hidden")

    # Past the first deadline, the session the warning kept is still good.
    time.sleep(max(0.0, loaded + IDLE + 1 - time.monotonic()))
    assert "Sign in" not in page.title()
    assert page.locator("#message-body").is_visible()
    still = page.request.get(f"/mail/m/{entry.pk}/", max_redirects=0)
    assert still.status == 200
    assert BODY in still.text()

    # Left alone again: the content leaves the page before the sign-out request goes out. What
    # the page held at that moment is kept in sessionStorage (same tab, same origin) to check.
    page.evaluate("""() => {
      const submit = HTMLFormElement.prototype.submit;
      HTMLFormElement.prototype.submit = function () {
        sessionStorage.setItem("at-sign-out", document.title + "\\n" +
                               document.documentElement.outerHTML);
        return submit.call(this);
      };
    }""")
    page.wait_for_url("**/mail/login/**", timeout=(IDLE + 5) * 1000)
    seen = page.evaluate("sessionStorage.getItem('at-sign-out')")
    assert seen and "Signing you out" in seen
    assert BODY not in seen and "Lab result" not in seen
    notice = page.get_by_role("status")
    assert f"You were signed out after {IDLE} seconds without activity." in notice.inner_text()
    assert BODY not in page.content()
    event = AuditEvent.objects.get(action="auth.sign-out")
    assert event.actor == alice.user and event.detail["reason"] == "idle"

    # Back does not bring the message back: the server asks to sign in.
    page.go_back()
    page.get_by_label("Username").wait_for()
    assert "/mail/login/" in page.url
    assert BODY not in page.content()
    assert page.csp_problems == []
    assert errors == []


def test_the_idle_warning_passes_axe_and_escape_keeps_the_session(page, settings):
    errors = script_errors(page)
    _open_message(page, settings)
    warning = page.get_by_role("alertdialog")
    warning.wait_for(timeout=IDLE * 1000)
    audit = Audit(page)
    audit.check("idle warning")
    audit.assert_clean()
    assert page.get_by_role("alertdialog").is_visible()
    page.keyboard.press("Escape")
    warning.wait_for(state="hidden")
    page.wait_for_timeout(3000)  # past the deadline the warning was counting down to
    assert page.locator("#message-body").is_visible()
    assert page.csp_problems == []
    assert errors == []


def test_a_request_from_another_tab_keeps_this_one_open(page, settings):
    errors = script_errors(page)
    _, entry = _open_message(page, settings)
    other = page.context.new_page()
    # The other tab is used while this one sits: its requests slide the shared session forward.
    for _ in range(4):
        time.sleep(4)
        other.goto(f"/mail/m/{entry.pk}/")
    assert page.locator("#message-body").is_visible()
    assert not page.get_by_role("alertdialog").is_visible()
    # When this tab signs out idle, the other one follows and clears its screen too.
    other.close()
    page.wait_for_url("**/mail/login/**", timeout=(IDLE + 5) * 1000)
    assert page.csp_problems == []
    assert errors == []


def test_signing_out_in_one_tab_clears_the_others_without_the_idle_message(page, settings):
    errors = script_errors(page)
    _, entry = _open_message(page, settings)
    other = page.context.new_page()
    other.goto(f"/mail/m/{entry.pk}/")
    other.get_by_role("button", name="Sign out").click()
    other.wait_for_url("**/mail/login/**")
    # The first tab leaves the message at once, long before its own idle deadline.
    page.wait_for_url("**/mail/login/**", timeout=IDLE * 1000 // 2)
    assert BODY not in page.content()
    assert "without activity" not in page.content()  # this was no idle sign-out
    assert AuditEvent.objects.filter(action="auth.sign-out").count() == 1
    assert page.csp_problems == []
    assert errors == []
