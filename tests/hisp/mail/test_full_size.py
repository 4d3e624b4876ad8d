"""The largest message the backbone takes, from the openssl partner, all the way: a scan signed
and encrypted by ``openssl cms`` to just under HISP_MAX_MESSAGE_BYTES, sent over real SMTP to
our listener, opened by our agent, filed with its attachment, and answered with a processed MDN
that openssl decrypts and verifies."""

from __future__ import annotations

import base64
import random
import smtplib

from django.conf import settings

from hisp import mdn
from hisp.models import MailboxEntry, Message
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.drive import drain

# Room left under the limit for openssl's own line lengths to vary with the content.
MARGIN = 300_000


def _inner(world, scan: bytes) -> bytes:
    head = world.partner.inner(
        to=world.alice.address, message_id="<scan@partner.example.net>"
    ).split(b"Content-Type: text/plain\r\n\r\n")[0]
    return head + (
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
        b"Content-Type: text/plain\r\n\r\nThe scan is attached.\r\n--XX\r\n"
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=scan.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(scan).replace(b"\n", b"\r\n")
        + b"--XX--\r\n"
    )


def _protected_just_under_the_limit(world) -> tuple[bytes, bytes]:
    """(inner, wire): the wire message within MARGIN of the limit, below it."""
    limit = settings.HISP_MAX_MESSAGE_BYTES
    rng = random.Random(7)  # incompressible, as a scan is
    probe = 1_000_000
    grown = len(world.partner.protect(_inner(world, rng.randbytes(probe)), to=world.alice.address))
    # Base64 inside base64: the wire grows linearly with the scan.
    size = int(probe * (limit - MARGIN) / grown)
    inner = _inner(world, rng.randbytes(size))
    wire = world.partner.protect(inner, to=world.alice.address)
    assert limit - 2 * MARGIN < len(wire) < limit, (len(wire), limit)
    return inner, wire


def test_a_message_just_under_the_size_limit_from_openssl_is_delivered_and_answered(
    transactional_db, world, backbone
):
    inner, wire = _protected_just_under_the_limit(world)
    with smtplib.SMTP(backbone.hostname, backbone.port, timeout=60) as client:
        client.ehlo("partner.example.net")
        refused = client.sendmail(world.partner.address, [world.alice.address], wire)
    assert refused == {}
    message = Message.objects.get(direction=Message.Direction.INBOUND)
    assert len(message.raw) == len(wire)

    drain()
    message.refresh_from_db()
    assert message.state == Message.State.DELIVERED, message.reason
    assert bytes(message.content) == inner
    entry = MailboxEntry.objects.get(message=message, address=world.alice)
    assert entry.has_attachments and entry.body_text == "The scan is attached."

    [sent] = world.sink.handler.messages
    report = mdn.parse(world.partner.open(sent.data, our_domain=HOSTED))
    assert report.disposition == "processed"
    assert report.original_message_id == "<scan@partner.example.net>"
    assert report.final_recipient == world.alice.address
