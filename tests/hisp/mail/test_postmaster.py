"""The reserved ``postmaster`` mailbox (RFC 5321 section 4.5.1, RFC 2142 section 5): every hosted
domain has one from the start, RCPT finds it in any case (and bare), and Direct mail to it takes
the normal inbound path, over real SMTP on loopback with a partner HISP running openssl."""

from __future__ import annotations

import json
import smtplib
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import (
    Address,
    AddressGrant,
    AuditEvent,
    Certificate,
    Delivery,
    MailboxEntry,
    Message,
)
from hisp.services import identity, pki
from hisp.services.mail import find_address
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.drive import drain
from tests.webmail.personas import Persona, signed_in

POSTMASTER = f"postmaster@{HOSTED}"


def _postmaster() -> Address:
    return Address.objects.get(address=POSTMASTER)


@pytest.fixture
def created(transactional_db: None) -> Address:
    """A hosted domain made the way operators make it (CLI, console and quick start alike)."""
    identity.add_domain(HOSTED)
    return _postmaster()


def _rcpt(port: int, *recipients: str) -> list[tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("partner.example.net")
        assert client.mail("doc@partner.example.net")[0] == 250
        return [client.docmd(f"RCPT TO:<{rcpt}>") for rcpt in recipients]


def _send(port: int, *, rcpt: str, wire: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("partner.example.net")
        assert client.mail("doc@partner.example.net")[0] == 250
        assert client.docmd(f"RCPT TO:<{rcpt}>")[0] == 250
        assert client.data(wire)[0] == 250


def test_a_new_domain_has_an_active_postmaster_with_its_own_certificate(created) -> None:
    domain = created.domain
    assert (created.kind, created.status) == (Address.Kind.SYSTEM, Address.Status.ACTIVE)
    assert created.display_name == "Postmaster"
    assert not created.users.exists()  # read through grants given by staff, owned by nobody
    [cert] = Certificate.objects.filter(address=created)
    assert cert.binding == Certificate.Binding.ADDRESS
    assert cert.bound_name == POSTMASTER
    assert cert.issued_by_id == domain.issuing_ca_id
    assert cert.private_key_id is not None  # so mail encrypted to it can be opened
    event = AuditEvent.objects.get(action="address.add", object_id=str(created.pk))
    assert event.detail["certificates"] == [cert.fingerprint_sha256]


@pytest.mark.parametrize(
    "spelling",
    [POSTMASTER, f"POSTMASTER@{HOSTED.upper()}", "Postmaster@Hospital.Example.Org"],
)
def test_rcpt_to_postmaster_in_any_case_is_accepted_and_finds_the_one_mailbox(
    backbone, created, spelling
) -> None:
    [(code, reply)] = _rcpt(backbone.port, spelling)
    assert (code, reply[:5]) == (250, b"2.1.5")
    found = find_address(spelling)
    assert found is not None and found.pk == created.pk


def test_bare_postmaster_is_accepted_when_the_hostname_lies_in_a_hosted_domain(
    backbone, created, settings
) -> None:
    settings.HISP_HOSTNAME = f"mx.{HOSTED}"
    with smtplib.SMTP("127.0.0.1", backbone.port, timeout=10) as client:
        client.ehlo("partner.example.net")
        client.mail("doc@partner.example.net")
        assert client.docmd("RCPT TO:<Postmaster>")[0] == 250
        client.data(b"Subject: hello\r\n\r\nfor the postmaster\r\n")
    assert Message.objects.get().envelope_to == [POSTMASTER]


def test_bare_postmaster_is_unknown_when_the_hostname_lies_in_no_hosted_domain(
    backbone, created, settings
) -> None:
    settings.HISP_HOSTNAME = "mx.not-hosted.example"
    [(code, reply)] = _rcpt(backbone.port, "Postmaster")
    assert (code, reply[:5]) == (550, b"5.1.1")


def test_a_second_spelling_of_postmaster_cannot_be_added(created) -> None:
    with pytest.raises(identity.IdentityError, match="postmaster address of"):
        identity.add_address(f"PostMaster@{HOSTED}")
    assert Address.objects.filter(address__iexact=POSTMASTER).count() == 1


def test_postmaster_cannot_leave_the_active_state(created) -> None:
    for status in (Address.Status.SUSPENDED, Address.Status.DISABLED, Address.Status.PENDING):
        with pytest.raises(identity.IdentityError, match="postmaster mailbox"):
            identity.ensure_status_allowed(created, status)
    identity.ensure_status_allowed(created, Address.Status.ACTIVE)
    # Only the reserved local part is held: other addresses move freely.
    other = identity.add_address(f"postmasters@{HOSTED}")
    identity.ensure_status_allowed(other, Address.Status.DISABLED)


def test_direct_mail_to_postmaster_over_smtp_is_delivered_to_its_mailbox(world, backbone):
    partner = world.partner
    inner = partner.inner(to=POSTMASTER, message_id="<pm1@partner.example.net>")
    wire = partner.protect(inner, to=POSTMASTER)  # encrypted to postmaster's own certificate
    _send(backbone.port, rcpt=f"POSTMASTER@{HOSTED}", wire=wire)
    drain()
    message = Message.objects.get(direction=Message.Direction.INBOUND)
    assert message.state == Message.State.DELIVERED
    assert message.signer == partner.address
    postmaster = _postmaster()
    entry = MailboxEntry.objects.get(address=postmaster, message=message)
    assert entry.subject == "Referral"
    assert Delivery.objects.get(message=message).state == Delivery.State.DELIVERED
    assert len(world.sink.handler.messages) == 1  # the processed MDN, as for anyone

    # Staff read it through an ordinary delegation granted to them in the console.
    sam = get_user_model().objects.create_user(username="sam", is_staff=True)
    device = TOTPDevice.objects.create(user=sam, name="phone", confirmed=True)
    AddressGrant.objects.create(user=sam, address=postmaster, role=AddressGrant.Role.READ)
    page = signed_in(Persona(user=sam, address=postmaster, device=device)).get(
        reverse("webmail:message-detail", args=[entry.pk])
    )
    assert page.status_code == 200
    assert b"Patient summary attached." in page.content


def test_postmaster_without_its_own_certificate_still_receives_direct_mail(world, backbone):
    """What migration 0004 leaves for an older domain: the address without an address-bound
    certificate. Partners then find and encrypt to the domain-bound one, which opens too."""
    postmaster = _postmaster()
    Certificate.objects.filter(address=postmaster).delete()
    partner = world.partner
    inner = partner.inner(to=POSTMASTER, message_id="<pm2@partner.example.net>")
    wire = partner.protect(inner, to=POSTMASTER)
    [used] = pki.current_certificates(POSTMASTER)
    assert used.binding == Certificate.Binding.DOMAIN
    _send(backbone.port, rcpt=POSTMASTER, wire=wire)
    drain()
    message = Message.objects.get(direction=Message.Direction.INBOUND)
    assert message.state == Message.State.DELIVERED
    assert MailboxEntry.objects.filter(address=postmaster, message=message).exists()


@pytest.mark.parametrize(
    ("protection", "reason"),
    [({"encrypt": False}, "not-encrypted"), ({"sign": False}, "not-signed")],
)
def test_unprotected_mail_to_postmaster_is_rejected_like_any_mailbox(
    world, backbone, protection, reason
):
    partner = world.partner
    inner = partner.inner(to=POSTMASTER, message_id="<pm3@partner.example.net>")
    _send(backbone.port, rcpt=POSTMASTER, wire=partner.protect(inner, to=POSTMASTER, **protection))
    drain()
    message = Message.objects.get(direction=Message.Direction.INBOUND)
    assert (message.state, message.reason) == (Message.State.REJECTED, reason)
    assert not MailboxEntry.objects.exists()
    # The staff message log shows it with its reason.
    out = StringIO()
    call_command("messages", "--json", "--direction", "in", stdout=out)
    [row] = json.loads(out.getvalue())
    assert (row["to"], row["state"], row["reason"]) == ([POSTMASTER], "rejected", reason)
    assert row["deliveries"][0]["detail"] == reason
