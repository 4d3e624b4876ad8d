"""A security key in real Chromium: the DevTools protocol's virtual authenticator (a CTAP2 USB
key that is touched automatically) answers navigator.credentials.create() and .get() as a real
key would, with its own P-256 key pair and counter."""

from __future__ import annotations

import pytest

from tests.e2e.test_webmail import sign_in
from tests.webmail.personas import PASSWORD, make_persona
from webmail.models import WebAuthnDevice

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _plug_in_a_key(page) -> tuple[object, str]:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "usb", "hasResidentKey": False,
        "hasUserVerification": False, "automaticPresenceSimulation": True,
    }})
    return cdp, added["authenticatorId"]


def test_a_clinician_registers_a_security_key_and_signs_in_with_it(page, live_server, settings):
    # The relying party is the address the browser is at: http://localhost:<port> (a name, not
    # an IP address, and a secure context for WebAuthn although it is plain HTTP).
    settings.HISP_WEB_URL = live_server.url
    assert live_server.url.startswith("http://localhost:")
    alice = make_persona("alice", "clinic.example")
    cdp, authenticator = _plug_in_a_key(page)

    sign_in(page, alice)  # the first time with the authenticator app's code
    page.get_by_role("link", name="Settings").click()
    page.get_by_role("link", name="Add a security key").click()
    page.get_by_label("Name of the key").fill("Front-desk key")
    page.get_by_role("button", name="Add security key").click()
    page.get_by_text("Security key “Front-desk key” added.").wait_for()
    assert page.get_by_role("cell", name="Front-desk key", exact=True).is_visible()
    stored = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
    assert len(stored["credentials"]) == 1
    device = WebAuthnDevice.objects.get(user=alice.user)
    assert device.credential_id == stored["credentials"][0]["credentialId"].replace(
        "+", "-").replace("/", "_").rstrip("=")

    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Username").wait_for()
    page.goto("/mail/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    assert page.get_by_label("6-digit code").is_visible()  # the code stays an alternative
    page.get_by_role("button", name="Use security key").click()
    page.get_by_role("heading", name="Inbox").wait_for()

    device.refresh_from_db()
    assert device.sign_count >= 1 and device.last_used_at is not None
    assert page.csp_problems == []
