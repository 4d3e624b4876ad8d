"""The MDNs we send as the partner (openssl) opens them, and reports from the partner that must
not count: RFC 3798, the Applicability Statement and the Implementation Guide for Delivery
Notification in Direct."""

from __future__ import annotations

import email
import email.policy

from hisp.models import Delivery, Message
from hisp.reports import field_blocks
from hisp.services import mail
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import crlf
from tests.hisp.mail.test_report_tracking import _alice_dsns, _mdn, _send, _state


def _opened(world) -> list[bytes]:
    return [world.partner.open(m.data, our_domain=HOSTED) for m in world.sink.handler.messages]


def test_an_mdn_names_the_original_recipient_as_the_sender_wrote_it(world):
    """RFC 3798 3.2.3: Original-Recipient is the address the sender used (its HISP may match
    local parts case-sensitively, RFC 5321 2.4); Final-Recipient the mailbox it reached. Both
    were our stored spelling."""
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<c1@partner.example.net>")
    mail.accept_incoming(
        raw=partner.protect(inner, to=world.alice.address),
        mail_from=partner.address,
        rcpt_tos=["Alice@hospital.example.org"],
        peer="partner",
    )
    drain()
    [raw] = _opened(world)
    [fields] = field_blocks(raw, "disposition-notification")
    assert dict(fields)["Original-Recipient"] == "rfc822;Alice@hospital.example.org"
    assert dict(fields)["Final-Recipient"] == f"rfc822;{world.alice.address}"
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["In-Reply-To"] == "<c1@partner.example.net>"
    assert "Disposition-Notification-To" not in message


def test_an_unsigned_mdn_changes_nothing_and_is_not_answered(world):
    """Anyone can encrypt to alice's certificate: a report must be signed by someone her
    domain trusts. Nothing goes back to the partner for it (never a report on a report)."""
    sent = _send(world)
    world.sink.handler.messages.clear()
    mail.accept_incoming(
        raw=world.partner.protect(
            crlf(_mdn(world, sent.message_id, "failed")), to=world.alice.address, sign=False
        ),
        mail_from=world.partner.address,
        rcpt_tos=[world.alice.address],
        peer="partner",
    )
    drain()
    report = Message.objects.get(direction=Message.Direction.INBOUND, peer="partner")
    assert (report.state, report.reason) == (Message.State.REJECTED, "not-signed")
    assert _state(world, sent) == Delivery.State.SENT
    assert _alice_dsns(world) == []
    assert world.sink.handler.messages == []


def test_the_courtesy_notice_is_a_complete_message_that_says_its_interval_plainly(world, settings):
    """RFC 5322 3.6: every message has a Date (it has none, as it does not pass through
    submission, which adds one); and its text said "once per 1 day, 0:00:00"."""
    from django.core.cache import cache

    cache.clear()
    settings.HISP_COURTESY_NOTICES = True
    partner = world.partner
    inner = partner.inner(to=world.alice.address, message_id="<u1@partner.example.net>")
    mail.accept_incoming(
        raw=partner.protect(inner, to=world.alice.address, encrypt=False),
        mail_from=partner.address,
        rcpt_tos=[world.alice.address],
        peer="partner",
    )
    drain()
    [raw] = _opened(world)
    notice = email.message_from_bytes(raw, policy=email.policy.default)
    assert notice["Date"] is not None and notice["Date"].datetime is not None
    text = " ".join(notice.get_content().split())
    assert "at most once per 1 day." in text
