"""A security-key answer is JSON from the browser, with more JSON (clientDataJSON) inside it in
base64. Nested thousands deep, either exhausted the parser's stack and the page answered 500:
at sign-in (before the second factor) and when adding a key. Now it is a malformed answer."""

from __future__ import annotations

import base64
import json

import pytest
from django.test import Client

from hisp.models import AuditEvent
from webmail.models import WebAuthnDevice

DEEP = "[" * 30_000  # under the form's 64 KiB limit


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


NESTED = {
    "credential": DEEP,
    "client data": json.dumps({
        "id": "AA", "rawId": "AA", "type": "public-key",
        "response": {"clientDataJSON": _b64url(DEEP.encode()), "attestationObject": "AA",
                     "authenticatorData": "AA", "signature": "AA"},
    }),
}
MALFORMED = "The browser's answer from the security key could not be read. Try again."


@pytest.mark.parametrize("where", sorted(NESTED))
def test_adding_a_key_refuses_a_deeply_nested_answer(alice, alice_client, where) -> None:
    alice_client.get("/mail/account/keys/add/")  # the page stores the challenge
    response = alice_client.post("/mail/account/keys/add/",
                                 {"name": "blue key", "credential": NESTED[where]})
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [MALFORMED]
    assert not WebAuthnDevice.objects.filter(user=alice.user).exists()


@pytest.mark.parametrize("where", sorted(NESTED))
def test_signing_in_refuses_a_deeply_nested_answer_and_counts_it(alice, where) -> None:
    WebAuthnDevice.objects.create(user=alice.user, name="blue key", credential_id="AA",
                                  public_key=b"\xa0", confirmed=True)
    client = Client()  # past the password, not yet the second factor
    client.force_login(alice.user, backend="django.contrib.auth.backends.ModelBackend")
    client.get("/mail/login/code/")  # the page stores the challenge
    response = client.post("/mail/login/key/", {"credential": NESTED[where]})
    assert response.status_code == 302
    assert response["Location"].startswith("/mail/login/code/")
    failed = AuditEvent.objects.get(action="auth.webauthn-failed")
    assert failed.detail["reason"] == "malformed"
    assert not client.session.get("otp_device_id")
