"""The mail API end to end, through the real mail flow and the real agent: alice's EHR sends a
referral with an attachment to bob (hosted here) and to a partner HISP, follows its delivery,
and bob's EHR reads it, verified, and files it."""

from __future__ import annotations

import base64

from django.contrib.auth import get_user_model
from django.test import Client

from hisp.models import AddressGrant, AppPassword, AuditEvent, Delivery
from hisp.smtp.credentials import app_password_hash
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.drive import drain
from tests.hisp.mail.test_outbound import _partner_report
from tests.webmail.api.conftest import basic

REFERRAL = "Please see Mr Jones about his knee."


def _program(username: str) -> Client:
    clear = f"{username}-ehr-password"
    user = get_user_model().objects.get(username=username)
    AppPassword.objects.create(user=user, name="EHR", password_hash=app_password_hash(clear))
    return Client(HTTP_AUTHORIZATION=basic(username, clear))


def test_an_ehr_sends_follows_and_another_reads_through_the_whole_flow(world):
    bob_user = get_user_model().objects.create_user(username="bob", password="unused pass 1")
    AddressGrant.objects.create(user=bob_user, address=world.bob)
    alice_ehr, bob_ehr = _program(world.alice.address), _program("bob")

    sent = alice_ehr.post("/api/v1/messages", content_type="application/json", data={
        "from": world.alice.address,
        "to": [world.bob.address],
        "cc": [world.partner.address],
        "subject": "Referral: J. Jones",
        "text": REFERRAL,
        "attachments": [{"filename": "summary.txt", "content_type": "text/plain",
                         "content_base64": base64.b64encode(b"knee, left").decode()}],
        "delivery_notification": False,
    })
    assert sent.status_code == 202, sent.content
    status_url = sent["Location"]
    drain()

    # The partner got it signed and encrypted, and can open it with its own key (openssl cms).
    [wire] = world.sink.handler.messages
    assert REFERRAL.encode() not in wire.data
    opened = world.partner.open(wire.data, our_domain=HOSTED)
    assert REFERRAL.encode() in opened and b"summary.txt" in opened

    # bob's program finds it in his INBOX, reads it as the HISP verified it, and files it.
    [mailbox] = bob_ehr.get("/api/v1/mailboxes").json()["mailboxes"]
    assert mailbox["address"] == world.bob.address
    [listed] = bob_ehr.get(f"/api/v1/mailboxes/{mailbox['id']}/messages").json()["messages"]
    assert listed["subject"] == "Referral: J. Jones" and listed["read"] is False
    entry = bob_ehr.get(f"/api/v1/entries/{listed['id']}").json()
    assert REFERRAL in entry["text"]
    assert entry["signer"] == world.alice.address
    [attachment] = entry["attachments"]
    assert bob_ehr.get(attachment["url"]).content == b"knee, left"
    rfc822 = bob_ehr.get(f"/api/v1/entries/{listed['id']}/rfc822")
    assert rfc822["Content-Type"].startswith("message/rfc822")
    assert b"smime=pass" in rfc822.content and REFERRAL.encode() in rfc822.content
    assert bob_ehr.patch(f"/api/v1/entries/{listed['id']}", data={"read": True},
                         content_type="application/json").status_code == 200
    opens = AuditEvent.objects.filter(action="message.open", actor=bob_user)
    assert opens.count() >= 2 and all(e.detail.get("via") == "api" for e in opens)
    # alice's own program sees no mail for bob, and bob's none of alice's status.
    assert alice_ehr.get(f"/api/v1/entries/{listed['id']}").status_code == 404
    assert bob_ehr.get(status_url).status_code == 404

    # alice's program follows delivery: bob's processed MDN came back through our own flow;
    # the partner's arrives as a real signed and encrypted MDN.
    states = {d["address"]: d["state"] for d in alice_ehr.get(status_url).json()["deliveries"]}
    assert states == {world.bob.address: Delivery.State.PROCESSED,
                      world.partner.address: Delivery.State.SENT}
    message = Delivery.objects.get(recipient=world.partner.address).message
    _partner_report(world, message, "processed")
    after = alice_ehr.get(status_url).json()
    assert {d["state"] for d in after["deliveries"]} == {Delivery.State.PROCESSED}
    assert all(d["processed_at"] for d in after["deliveries"])
