"""Following a sent message (GET /api/v1/messages/<id>): its recipients' delivery states as the
webmail's Sent view names them, for whoever holds a grant on the sending address; 404 for
anyone else, for received mail and for ids that do not exist."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from hisp.models import Address, AddressGrant, Delivery, Message
from hisp.services import identity, outbound, tracking
from tests.factories import AddressGrantFactory, MessageFactory
from tests.webmail.api.conftest import app_password_for, basic
from tests.webmail.personas import Persona

pytestmark = pytest.mark.django_db


def _send(client: Client, sender: str, to: list[str]) -> int:
    response = client.post("/api/v1/messages", content_type="application/json", data={
        "from": sender, "to": to, "subject": "Referral", "text": "Please see."})
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _status(client: Client, pk: int):
    return client.get(f"/api/v1/messages/{pk}")


def test_the_sender_sees_each_recipient_queued(alice, alice_api):
    pk = _send(alice_api, "alice@clinic.example", ["dana@partner.example", "erin@partner.example"])
    response = _status(alice_api, pk)
    assert response.status_code == 200
    body = response.json()
    message = Message.objects.get(pk=pk)
    assert body["id"] == pk and body["message_id"] == message.message_id
    assert body["status_url"] == f"http://testserver/api/v1/messages/{pk}" and body["state"] == "queued"
    assert [d["address"] for d in body["deliveries"]] == ["dana@partner.example",
                                                          "erin@partner.example"]
    first = body["deliveries"][0]
    assert first["state"] == "queued"
    assert first["description"] == "Waiting to be encrypted and sent."
    assert first["processed_at"] is None and first["dispatched_at"] is None
    assert "reason" not in first
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("role", [AddressGrant.Role.READ, AddressGrant.Role.READ_SEND])
def test_a_delegate_of_the_sending_address_sees_it(alice, bob, alice_api, bob_api, role):
    pk = _send(alice_api, "alice@clinic.example", ["dana@partner.example"])
    AddressGrantFactory(user=bob.user, address=alice.address, role=role)
    assert _status(bob_api, pk).status_code == 200


def test_an_outsider_an_unknown_id_and_received_mail_are_404(alice, charlie, alice_api,
                                                              charlie_api):
    pk = _send(alice_api, "alice@clinic.example", ["dana@partner.example"])
    response = _status(charlie_api, pk)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not-found"
    assert _status(alice_api, pk + 1000).status_code == 404
    received = MessageFactory(direction=Message.Direction.INBOUND, state=Message.State.DELIVERED,
                              envelope_from="alice@clinic.example",
                              envelope_to=["alice@clinic.example"])
    assert _status(alice_api, received.pk).status_code == 404


def test_a_suspended_sending_address_closes_its_status(alice, alice_api):
    pk = _send(alice_api, "alice@clinic.example", ["dana@partner.example"])
    Address.objects.filter(pk=alice.address.pk).update(status=Address.Status.SUSPENDED)
    assert _status(alice_api, pk).status_code == 404


def test_a_failed_delivery_shows_its_reason(alice, alice_api):
    pk = _send(alice_api, "alice@clinic.example", ["dana@partner.example", "erin@partner.example"])
    delivery = Delivery.objects.get(message_id=pk, recipient="dana@partner.example")
    tracking.fail(delivery, detail="550 5.1.1 No such user", status="5.1.1",
                  why="the partner has no such user")
    body = _status(alice_api, pk).json()
    assert body["state"] == "failed"
    failed, queued = body["deliveries"]
    assert failed["state"] == "failed" and failed["reason"] == "550 5.1.1 No such user"
    assert failed["description"] == "Delivery failed."
    assert queued["state"] == "queued" and "reason" not in queued


def test_processed_and_dispatched_times_are_shown(alice, alice_api):
    pk = _send(alice_api, "alice@clinic.example", ["dana@partner.example"])
    delivery = Delivery.objects.get(message_id=pk)
    processed = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    dispatched = datetime(2026, 3, 1, 9, 45, tzinfo=UTC)
    assert tracking.processed(delivery, at=processed)
    assert tracking.dispatched(delivery, at=dispatched, final_delivery=True)
    [shown] = _status(alice_api, pk).json()["deliveries"]
    assert shown["state"] == "dispatched"
    assert shown["description"] == "Delivered to the recipient's mailbox."
    assert shown["processed_at"] == processed.isoformat()
    assert shown["dispatched_at"] == dispatched.isoformat()


# End to end: hosted addresses with real keys from the built-in CA, the message protected by the
# agent and delivered within this HISP by hisp.services.outbound, as a worker would.

HOSTED = "hospital.example.org"


@pytest.fixture
def hospital(settings) -> Client:
    settings.HISP_CA_KEY_BITS = 2048
    identity.add_domain(HOSTED)
    identity.add_address(f"alice@{HOSTED}", name="Alice", password="correct horse battery",
                         address_cert=True)
    identity.add_address(f"bob@{HOSTED}", name="Bob", address_cert=True)
    user = get_user_model().objects.get(username=f"alice@{HOSTED}")
    persona = Persona(user=user, address=None, device=None)  # type: ignore[arg-type]
    return Client(HTTP_AUTHORIZATION=basic(user.username, app_password_for(persona)))


def test_delivery_within_this_hisp_and_to_an_unknown_address_are_reported(hospital):
    pk = _send(hospital, f"alice@{HOSTED}", [f"bob@{HOSTED}", f"nobody@{HOSTED}"])
    assert _status(hospital, pk).json()["state"] == "queued"
    assert outbound.process(pk) == "protected:2/2"
    # One copy per certificate group, each its own delivery task on a worker.
    for delivery in Delivery.objects.filter(message_id=pk, state=Delivery.State.QUEUED):
        outbound.deliver(delivery.pk)
    body = _status(hospital, pk).json()
    by_address = {d["address"]: d for d in body["deliveries"]}
    delivered, unknown = by_address[f"bob@{HOSTED}"], by_address[f"nobody@{HOSTED}"]
    assert delivered["state"] == "sent" and delivered["sent_at"] is not None
    assert unknown["state"] == "failed" and unknown["reason"] == "550 5.1.1 No such user here"
    assert body["state"] == "failed"  # the webmail's Sent view: any failure shows
