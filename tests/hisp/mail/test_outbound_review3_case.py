"""Outbound review 3: a recipient named twice in different case (``doc@`` and ``DOC@``) is one
delivery, whichever way the message is submitted (webmail, the submission port, ``manage.py
send``). As two, tracking (which matches MDNs ignoring case) gave the partner's one processed
MDN to one of them and failed the other for want of it, with a false failure notice."""

from __future__ import annotations

import smtplib
import ssl

from django.core.management import call_command
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import Delivery, MailboxEntry, Message
from hisp.services import compose, mail, tracking
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, crlf
from tests.webmail.personas import Persona, signed_in

DOC = f"doc@{PARTNER}"
SHOUTED = f"DOC@{PARTNER.upper()}"


def _recipients(message: Message) -> list[str]:
    return list(message.deliveries.order_by("pk").values_list("recipient", flat=True))


def _processed_mdn_from_the_partner(world, message: Message) -> None:
    body = crlf(
        (
            f"From: {DOC}\nTo: {world.alice.address}\n"
            f"Message-ID: <mdn-{message.pk}@{PARTNER}>\n"
            "Subject: Processed\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=disposition-notification; boundary="b1"\n'
            "\n--b1\nContent-Type: text/plain\n\nProcessed.\n--b1\n"
            "Content-Type: message/disposition-notification\n\n"
            f"Reporting-UA: {PARTNER}; openssl\nFinal-Recipient: rfc822;{DOC}\n"
            f"Original-Message-ID: {message.message_id}\n"
            "Disposition: automatic-action/MDN-sent-automatically;processed\n"
            "\n--b1--\n"
        ).encode()
    )
    mail.accept_incoming(
        raw=world.partner.protect(body, to=world.alice.address),
        mail_from=DOC, rcpt_tos=[world.alice.address], peer="partner",
    )
    drain()


def test_a_recipient_named_in_two_cases_gets_one_copy_and_no_false_timeout(world, settings):
    raw = compose.build_message(sender=world.alice.address, to=[DOC], cc=[SHOUTED],
                                subject="Referral", body_text="Please see the patient.",
                                delivery_notification=False)
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    drain()
    assert [r.rcpt_tos for r in world.sink.handler.messages] == [[DOC]]
    _processed_mdn_from_the_partner(world, message)
    later = timezone.now() + settings.HISP_MDN_PROCESSED_TIMEOUT * 2
    assert tracking.expire_overdue(now=later) == 0
    assert [d.state for d in message.deliveries.all()] == [Delivery.State.PROCESSED]
    assert not MailboxEntry.objects.filter(
        address=world.alice, message__kind=Message.Kind.DSN
    ).exists()


def test_the_submission_port_makes_one_delivery_of_two_spellings(submission, alice):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(submission.hostname, submission.port, timeout=10) as client:
        client.starttls(context=context)
        client.login(alice.address, "correct horse battery")
        refused = client.sendmail(
            alice.address, [DOC, SHOUTED],
            f"From: {alice.address}\r\nTo: {DOC}\r\nSubject: s\r\n\r\nhi\r\n".encode(),
        )
    assert refused == {}
    assert _recipients(Message.objects.get()) == [DOC]


def test_manage_py_send_makes_one_delivery_of_two_spellings(world):
    call_command("send", "--from", world.alice.address, "--to", SHOUTED, "--to", DOC,
                 "--subject", "Referral")
    assert _recipients(Message.objects.get()) == [SHOUTED]


def test_the_webmail_makes_one_delivery_of_two_spellings(world):
    user = world.alice.users.get()
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    client = signed_in(Persona(user=user, address=world.alice, device=device))
    response = client.post("/mail/compose/", {
        "sender": world.alice.pk, "to": f"{DOC}, {SHOUTED}", "cc": SHOUTED.lower(),
        "subject": "Referral", "body": "Please see.",
    })
    assert response.status_code == 302
    assert _recipients(Message.objects.get()) == [DOC]
