"""Security keys (WebAuthn) as a second factor: the ceremonies on real P-256 signatures from a
software authenticator, then the pages (registration, sign-in, removal, access)."""

from __future__ import annotations

import json
import time

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

from hisp.models import AuditEvent
from tests.webmail.authenticator import SoftAuthenticator
from tests.webmail.personas import PASSWORD, Persona
from webmail import securitykeys
from webmail.models import WebAuthnDevice
from webmail.securitykeys import Reason, Refused

ORIGIN = "https://mail.clinic.example"
RP_ID = "mail.clinic.example"


@pytest.fixture(autouse=True)
def _web_url(settings):
    settings.HISP_WEB_URL = ORIGIN


@pytest.fixture
def key() -> SoftAuthenticator:
    return SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)


def _register(persona: Persona, key: SoftAuthenticator, name: str = "blue key") -> WebAuthnDevice:
    """Registration through the ceremony functions (the pages are tested further down)."""
    session = SessionStore()
    options = securitykeys.registration_options(session=session, user=persona.user, existing=[])
    new = securitykeys.verify_registration(session=session, credential=key.create(options),
                                           existing=[])
    return WebAuthnDevice.objects.create(
        user=persona.user, name=name, credential_id=new.credential_id,
        public_key=new.public_key, sign_count=new.sign_count, transports=new.transports)


def _assert(device: WebAuthnDevice, answer) -> tuple[WebAuthnDevice, int]:
    session = SessionStore()
    options = securitykeys.authentication_options(session=session, devices=[device])
    return securitykeys.verify_authentication(session=session, credential=answer(options),
                                              devices=[device])


def _refusal(call) -> Refused:
    with pytest.raises(Refused) as caught:
        call()
    return caught.value


# --- The ceremonies ----------------------------------------------------------------------------
def test_the_relying_party_is_the_webmails_public_address(settings):
    assert securitykeys.relying_party() == securitykeys.RelyingParty(id=RP_ID, origin=ORIGIN)
    settings.HISP_WEB_URL = "https://Direct.Example.org:443"
    assert securitykeys.relying_party().origin == "https://direct.example.org"
    settings.HISP_WEB_URL = "http://localhost:8000"
    party = securitykeys.relying_party()
    assert (party.id, party.origin) == ("localhost", "http://localhost:8000")


def test_a_real_key_registers_and_then_signs_in(alice, key):
    device = _register(alice, key)
    assert device.credential_id == bytes_to_base64url(key.credential_id)
    assert bytes(device.public_key) == key.cose_public_key()
    assert device.transports == ["usb"]
    found, count = _assert(device, key.get)
    assert (found.pk, count) == (device.pk, 1)


def test_registration_options_exclude_the_users_keys_and_ask_for_no_attestation(alice, key):
    device = _register(alice, key)
    options = securitykeys.registration_options(session=SessionStore(), user=alice.user,
                                                existing=[device])
    assert options["rp"] == {"name": "Direct mail", "id": RP_ID}
    assert options["attestation"] == "none"
    assert [c["id"] for c in options["excludeCredentials"]] == [device.credential_id]
    handle = base64url_to_bytes(options["user"]["id"])  # opaque, not the user's id or name
    assert len(handle) == 32 and handle != str(alice.user.pk).encode()


def test_sign_in_options_allow_only_the_users_own_keys(alice, bob, key):
    mine = _register(alice, key)
    _register(bob, SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN))
    options = securitykeys.authentication_options(session=SessionStore(), devices=[mine])
    assert [c["id"] for c in options["allowCredentials"]] == [mine.credential_id]
    assert options["rpId"] == RP_ID


def test_it_refuses_an_answer_made_for_another_origin(alice, key):
    device = _register(alice, key)
    refusal = _refusal(lambda: _assert(device, lambda o: key.get(o, origin="https://phish.example")))
    assert refusal.reason == Reason.WRONG_ORIGIN
    assert "https://phish.example" in str(refusal) and ORIGIN in str(refusal)
    session = SessionStore()
    options = securitykeys.registration_options(session=session, user=alice.user, existing=[])
    refusal = _refusal(lambda: securitykeys.verify_registration(
        session=session, credential=key.create(options, origin="https://phish.example"),
        existing=[]))
    assert refusal.reason == Reason.WRONG_ORIGIN


def test_it_refuses_an_answer_signed_for_another_rp_id(alice, key):
    device = _register(alice, key)
    refusal = _refusal(lambda: _assert(device, lambda o: key.get(o, rp_id="clinic.example")))
    assert refusal.reason == Reason.WRONG_RP_ID
    assert RP_ID in str(refusal)
    session = SessionStore()
    options = securitykeys.registration_options(session=session, user=alice.user, existing=[])
    refusal = _refusal(lambda: securitykeys.verify_registration(
        session=session, credential=key.create(options, rp_id="phish.example"), existing=[]))
    assert refusal.reason == Reason.WRONG_RP_ID


def test_it_refuses_a_counter_that_goes_back_or_stands_still(alice, key):
    device = _register(alice, key)
    device.sign_count = 5
    for reported in (3, 5):
        refusal = _refusal(lambda r=reported: _assert(device, lambda o: key.get(o, sign_count=r)))
        assert refusal.reason == Reason.SIGN_COUNT
        assert "copied" in str(refusal)
    assert _assert(device, lambda o: key.get(o, sign_count=6))[1] == 6


def test_a_key_without_a_counter_keeps_answering_zero(alice, key):
    device = _register(alice, key)
    assert _assert(device, lambda o: key.get(o, sign_count=0))[1] == 0
    assert _assert(device, lambda o: key.get(o, sign_count=0))[1] == 0


def test_a_forged_signature_is_invalid_not_a_cloned_key(alice, key):
    device = _register(alice, key)
    device.sign_count = 5
    impostor = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN, credential_id=key.credential_id)
    refusal = _refusal(lambda: _assert(device, lambda o: impostor.get(o, sign_count=2)))
    assert refusal.reason == Reason.INVALID


def test_an_answer_to_another_challenge_is_invalid(alice, key):
    device = _register(alice, key)
    session = SessionStore()
    securitykeys.authentication_options(session=session, devices=[device])
    stale = key.get({"challenge": "c3RhbGUtY2hhbGxlbmdl"})
    refusal = _refusal(lambda: securitykeys.verify_authentication(
        session=session, credential=stale, devices=[device]))
    assert refusal.reason == Reason.INVALID


def test_a_challenge_is_used_once_and_expires(alice, key):
    device = _register(alice, key)
    session = SessionStore()
    options = securitykeys.authentication_options(session=session, devices=[device])
    answer = key.get(options)
    securitykeys.verify_authentication(session=session, credential=answer, devices=[device])
    refusal = _refusal(lambda: securitykeys.verify_authentication(
        session=session, credential=answer, devices=[device]))
    assert refusal.reason == Reason.EXPIRED
    options = securitykeys.authentication_options(session=session, devices=[device])
    session["webmail.webauthn.authentication"]["at"] = time.time() - 3600
    refusal = _refusal(lambda: securitykeys.verify_authentication(
        session=session, credential=key.get(options), devices=[device]))
    assert refusal.reason == Reason.EXPIRED


def test_a_key_not_on_the_account_is_unknown(alice, bob, key):
    mine = _register(alice, key)
    theirs_key = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    _register(bob, theirs_key)
    refusal = _refusal(lambda: _assert(mine, theirs_key.get))
    assert refusal.reason == Reason.UNKNOWN_KEY


@pytest.mark.parametrize("junk", ["", "not json", "[]", '{"id": "x"}',
                                  json.dumps({"id": "!!", "rawId": "!!", "type": "public-key",
                                              "response": {"clientDataJSON": "%%",
                                                           "authenticatorData": "",
                                                           "signature": ""}})])
def test_a_malformed_answer_is_refused_as_unreadable(alice, key, junk):
    device = _register(alice, key)
    refusal = _refusal(lambda: _assert(device, lambda o: junk))
    assert refusal.reason == Reason.MALFORMED


def test_registering_the_same_key_twice_is_refused(alice, key):
    device = _register(alice, key)
    session = SessionStore()
    options = securitykeys.registration_options(session=session, user=alice.user,
                                                existing=[device])
    refusal = _refusal(lambda: securitykeys.verify_registration(
        session=session, credential=key.create(options), existing=[device]))
    assert refusal.reason == Reason.ALREADY_REGISTERED


# --- Pages: registration -----------------------------------------------------------------------
def _add_key_page(client: Client, key: SoftAuthenticator, name: str = "blue key"):
    page = client.get("/mail/account/keys/add/")
    assert page.status_code == 200
    return client.post("/mail/account/keys/add/",
                       {"name": name, "credential": key.create(page.context["key_options"])})


def test_it_registers_a_named_key_from_the_account_page(alice, alice_client, key):
    response = _add_key_page(alice_client, key, "blue key")
    assert response.status_code == 302
    assert response["Location"] == "/mail/account/"
    device = WebAuthnDevice.objects.get(user=alice.user)
    assert (device.name, device.confirmed) == ("blue key", True)
    event = AuditEvent.objects.get(action="webauthn.register")
    assert (event.actor, event.object_id, event.detail["name"]) == (alice.user, str(device.pk),
                                                                    "blue key")
    _add_key_page(alice_client, SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN), "laptop")
    account = alice_client.get("/mail/account/").content.decode()
    assert "blue key" in account and "laptop" in account
    assert f"/mail/account/keys/{device.pk}/remove/" in account


def test_the_add_key_page_loads_its_script_and_options_without_inline_script(alice_client):
    body = alice_client.get("/mail/account/keys/add/").content.decode()
    assert 'src="/static/webmail/webauthn.js"' in body
    assert '<script id="webauthn-create" type="application/json">' in body
    assert 'name="credential" value=""' in body


def test_a_registration_from_another_origin_is_refused_with_its_reason(alice, alice_client, key):
    page = alice_client.get("/mail/account/keys/add/")
    answer = key.create(page.context["key_options"], origin="https://phish.example")
    response = alice_client.post("/mail/account/keys/add/", {"name": "k", "credential": answer})
    assert response.status_code == 200
    assert "another web address" in response.content.decode()
    assert not WebAuthnDevice.objects.exists()


def test_adding_a_key_without_touching_it_asks_for_the_touch(alice_client):
    alice_client.get("/mail/account/keys/add/")
    response = alice_client.post("/mail/account/keys/add/", {"name": "k", "credential": ""})
    assert response.status_code == 200
    assert "Touch your security key first." in response.content.decode()


def test_adding_a_key_needs_a_verified_session(alice):
    client = Client()
    client.post("/mail/login/", {"username": "alice", "password": PASSWORD})
    response = client.get("/mail/account/keys/add/")
    assert response.status_code == 302
    assert response["Location"].startswith("/mail/login/code/")


# --- Pages: sign-in ----------------------------------------------------------------------------
def _password_step(username: str) -> Client:
    client = Client()
    assert client.post("/mail/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return client


def _key_step(client: Client, answer, next_url: str = "/mail/"):
    page = client.get("/mail/login/code/", {"next": next_url})
    return client.post("/mail/login/key/", {"credential": answer(page.context["key_options"]),
                                            "next": next_url})


def test_the_second_step_offers_the_key_and_keeps_the_code(alice, key):
    _register(alice, key)
    body = _password_step("alice").get("/mail/login/code/").content.decode()
    assert "Use security key" in body
    assert "6-digit code" in body
    assert 'src="/static/webmail/webauthn.js"' in body


def test_a_user_without_keys_sees_only_the_code(alice):
    body = _password_step("alice").get("/mail/login/code/").content.decode()
    assert "Use security key" not in body
    assert "webauthn.js" not in body


def test_signing_in_with_a_key_verifies_the_session(alice, key):
    device = _register(alice, key)
    client = _password_step("alice")
    response = _key_step(client, key.get, f"/mail/a/{alice.address.pk}/inbox/")
    assert response.status_code == 302
    assert response["Location"] == f"/mail/a/{alice.address.pk}/inbox/"
    assert client.session["otp_device_id"] == device.persistent_id
    assert client.get(f"/mail/a/{alice.address.pk}/inbox/").status_code == 200
    device.refresh_from_db()
    assert device.sign_count == 1 and device.last_used_at is not None
    event = AuditEvent.objects.get(action="auth.sign-in")
    assert (event.actor, event.detail) == (alice.user, {"factor": "webauthn", "device": device.pk})


def test_the_verified_check_of_the_staff_console_accepts_a_key(alice, key):
    alice.user.is_staff = True
    alice.user.save()
    _register(alice, key)
    client = _password_step("alice")
    assert client.get("/console/").status_code == 302  # password only: sent to the second step
    _key_step(client, key.get)
    assert client.get("/console/").status_code == 200


def test_a_refused_key_shows_why_and_leaves_the_session_unverified(alice, key):
    device = _register(alice, key)
    device.sign_count = 9
    device.save()
    client = _password_step("alice")
    response = _key_step(client, lambda o: key.get(o, sign_count=4))
    assert response.status_code == 302
    assert response["Location"].startswith("/mail/login/code/")
    page = client.get(response["Location"]).content.decode()
    assert "use counter went backwards" in page
    assert client.get(f"/mail/a/{alice.address.pk}/inbox/").status_code == 302
    assert AuditEvent.objects.get(action="auth.webauthn-failed").detail == {"reason": "sign-count"}
    device.refresh_from_db()
    assert device.sign_count == 9


def test_wrong_origin_at_sign_in_is_explained(alice, key):
    _register(alice, key)
    client = _password_step("alice")
    response = _key_step(client, lambda o: key.get(o, origin="https://phish.example"))
    page = client.get(response["Location"]).content.decode()
    assert "another web address" in page and ORIGIN in page


def test_failed_key_answers_count_towards_the_lockout(alice, key):
    _register(alice, key)
    client = _password_step("alice")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _key_step(client, lambda o: key.get(o, rp_id="phish.example"))
    client.post("/mail/logout/")
    response = Client().post("/mail/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code in (403, 429)


def test_a_key_only_user_is_asked_for_the_key_and_cannot_enrol_a_new_code(alice, key):
    _register(alice, key)
    alice.device.delete()
    client = _password_step("alice")
    assert client.get("/mail/")["Location"].startswith("/mail/login/code/")
    assert client.get("/mail/login/enrol/")["Location"] == "/mail/login/code/"
    body = client.get("/mail/login/code/").content.decode()
    assert "Use security key" in body and "6-digit code" not in body
    _key_step(client, key.get)
    assert client.get(f"/mail/a/{alice.address.pk}/inbox/").status_code == 200


def test_the_key_step_needs_the_password_step_first(db):
    response = Client().post("/mail/login/key/", {"credential": "{}"})
    assert response.status_code == 302
    assert response["Location"].startswith("/mail/login/")


def test_a_user_with_a_key_submits_mail_with_app_passwords_only(alice, key):
    from hisp.smtp.credentials import check

    alice.device.delete()
    assert check("alice", PASSWORD, client="192.0.2.1").user == alice.user
    _register(alice, key)
    assert check("alice", PASSWORD, client="192.0.2.2").user is None


# --- Pages: removal and access -----------------------------------------------------------------
def test_removing_a_key_needs_the_password(alice, alice_client, key):
    device = _register(alice, key)
    url = f"/mail/account/keys/{device.pk}/remove/"
    assert alice_client.get(url).status_code == 200
    response = alice_client.post(url, {"password": "not my password"})
    assert response.status_code == 200
    assert "That is not your password." in response.content.decode()
    assert WebAuthnDevice.objects.filter(pk=device.pk).exists()
    response = alice_client.post(url, {"password": PASSWORD})
    assert response.status_code == 302
    assert not WebAuthnDevice.objects.filter(pk=device.pk).exists()
    event = AuditEvent.objects.get(action="webauthn.remove")
    assert (event.actor, event.object_id, event.detail["name"]) == (alice.user, str(device.pk),
                                                                    "blue key")


def test_an_outsider_gets_404_for_another_users_key(alice, charlie, charlie_client, key):
    device = _register(alice, key)
    url = f"/mail/account/keys/{device.pk}/remove/"
    assert charlie_client.get(url).status_code == 404
    assert charlie_client.post(url, {"password": PASSWORD}).status_code == 404
    assert WebAuthnDevice.objects.filter(pk=device.pk).exists()
    assert "blue key" not in charlie_client.get("/mail/account/").content.decode()
    assert charlie_client.get("/mail/account/keys/999999/remove/").status_code == 404


def test_another_users_key_does_not_sign_in_to_my_account(alice, bob, key):
    _register(alice, SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN))
    _register(bob, key)
    client = _password_step("alice")
    response = _key_step(client, key.get)
    assert "not registered to your account" in client.get(response["Location"]).content.decode()
    assert client.get(f"/mail/a/{alice.address.pk}/inbox/").status_code == 302
