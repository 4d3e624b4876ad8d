"""A received message whose signer cannot be checked for revocation now (its CRL server does not
answer) is retried for HISP_INBOUND_RETRY_PERIOD after it arrived, then rejected; an outage
shorter than that costs a delay, not the message. Before, it was rejected after five attempts
(about 15 minutes), and its sender learned of the failure only when no MDN came, an hour later.

Real components: the partner (openssl cms) signs with a certificate whose CRL distribution
point is a closed port on loopback, so the revocation fetch really fails."""

from __future__ import annotations

import dataclasses
import socket
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from django.utils import timezone

from hisp.models import Delivery, MailboxEntry, Message
from hisp.services import inbound, mail
from tests.hisp.mail.partner import Partner, leaf_certificate


def _closed_port_url(path: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


@pytest.fixture
def unreachable_crl_signer(world, settings, tmp_path) -> Partner:
    """The partner's user with a certificate (same CA, same key) whose CRL nobody serves."""
    settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS = True  # the CRL URL is on loopback
    partner = world.partner
    cert = leaf_certificate(partner.ca, partner.ca_key, partner.key, partner.address,
                            crl_url=_closed_port_url("/partner.crl"))
    signer = dataclasses.replace(partner, folder=tmp_path / "flaky", cert=cert)
    signer.folder.mkdir()
    signer.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    signer.key_file.write_bytes(partner.key_file.read_bytes())
    signer.ca_file.write_bytes(partner.ca_file.read_bytes())
    return signer


def _receive(world, signer: Partner, message_id: str) -> Message:
    inner = world.partner.inner(to=world.alice.address, message_id=message_id)
    return mail.accept_incoming(
        raw=world.partner.protect(inner, to=world.alice.address, signer=signer),
        mail_from=world.partner.address, rcpt_tos=[world.alice.address], peer="127.0.0.1:2525",
    )


def _arrived(message: Message, ago: timedelta, *, attempts: int) -> None:
    Message.objects.filter(pk=message.pk).update(
        created_at=timezone.now() - ago, attempts=attempts
    )


def test_an_unreachable_crl_is_retried_for_the_period_then_rejected(
    world, settings, unreachable_crl_signer
):
    settings.HISP_INBOUND_RETRY_PERIOD = timedelta(minutes=45)
    message = _receive(world, unreachable_crl_signer, "<t1@partner.example.net>")
    assert inbound.process(message.pk) == "retry"
    message.refresh_from_db()
    assert (message.state, message.attempts) == (Message.State.RECEIVED, 1)
    # Forty minutes and eight attempts on (the old code gave up at the fifth): still retried.
    _arrived(message, timedelta(minutes=40), attempts=8)
    assert inbound.process(message.pk) == "retry"
    message.refresh_from_db()
    assert (message.state, message.attempts) == (Message.State.RECEIVED, 9)
    assert not Delivery.objects.filter(message=message).exists()
    # The period is over: rejected with the agent's reason, no MDN (a trust failure).
    _arrived(message, timedelta(minutes=46), attempts=9)
    assert inbound.process(message.pk) == "delivered:0"
    message.refresh_from_db()
    assert (message.state, message.reason) == (Message.State.REJECTED, "revocation-unavailable")
    assert Delivery.objects.get(message=message).detail == "revocation-unavailable"
    assert world.sink.handler.messages == []


def test_the_last_retry_is_planned_at_the_end_of_the_period(
    world, settings, unreachable_crl_signer, django_capture_on_commit_callbacks
):
    """Eight failures in, the backoff would wait 128 minutes: the retry comes when the period
    ends instead, so the message is decided within it."""
    settings.HISP_INBOUND_RETRY_PERIOD = timedelta(minutes=45)
    message = _receive(world, unreachable_crl_signer, "<t2@partner.example.net>")
    _arrived(message, timedelta(minutes=40), attempts=8)
    def process() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            assert inbound.process(message.pk) == "retry"

    queued = _countdowns(settings, process)
    assert queued == [pytest.approx(300, abs=15)]


def test_mail_from_a_reachable_signer_is_unaffected(world):
    inner = world.partner.inner(to=world.alice.address, message_id="<t3@partner.example.net>")
    message = mail.accept_incoming(
        raw=world.partner.protect(inner, to=world.alice.address),
        mail_from=world.partner.address, rcpt_tos=[world.alice.address], peer="127.0.0.1:2525",
    )
    assert inbound.process(message.pk) == "delivered:1"
    assert MailboxEntry.objects.filter(address=world.alice, message=message).exists()


def _countdowns(settings, run) -> list[float]:
    """The countdowns of the process_incoming tasks ``run`` queued on the real broker (the
    tests' filesystem transport)."""
    import base64
    import json
    from pathlib import Path

    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    before = set(folder.iterdir())
    run()
    found = []
    for path in sorted(set(folder.iterdir()) - before):
        envelope = json.loads(path.read_text())
        headers = envelope.get("headers", {})
        if headers.get("task") != "hisp.mail.process_incoming":
            continue
        eta = headers.get("eta")
        assert eta, envelope
        found.append((timezone.datetime.fromisoformat(eta) - timezone.now()).total_seconds())
        base64.b64decode(envelope["body"])  # a real Celery message
    return found
