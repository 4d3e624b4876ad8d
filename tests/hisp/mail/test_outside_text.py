"""Text from outside (report fields, submitted headers, certificates) with control characters:
PostgreSQL refuses a NUL in text and in jsonb strings, so each must be made printable (or
refused with a clear answer) before it reaches a query, a row or the audit log.

openssl's S/MIME text mode cuts lines at a NUL, so reports travel from bob (hosted) to alice
through our own agent, and the partner signs in binary mode where its message holds a NUL."""

from __future__ import annotations

import base64
import logging
import smtplib
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hisp.models import AuditEvent, Delivery, Message
from hisp.services import compose, inbound, mail
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, Partner, leaf_certificate


def _alice_to_bob(world) -> Message:
    raw = compose.build_message(
        sender=world.alice.address, to=[world.bob.address], subject="Referral",
        body_text="Please see.", delivery_notification=False,
    )
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    drain()
    assert Delivery.objects.get(message=message).state == Delivery.State.PROCESSED
    return message


def _report_from_bob(world, *, report_type: str, fields: str) -> Message:
    """bob's HISP (ours) files a report to alice: a hand-written multipart/report, protected
    by our agent like any of bob's mail; returns the report as alice's HISP received it."""
    machine = {
        "disposition-notification": "message/disposition-notification",
        "delivery-status": "message/delivery-status",
    }[report_type]
    raw = (
        f"From: {world.bob.address}\r\nTo: {world.alice.address}\r\nSubject: Report\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nA report.\r\n"
        f"--b1\r\nContent-Type: {machine}\r\n\r\n{fields}\r\n--b1--\r\n"
    ).encode("latin-1")
    assert b"\x00" in raw
    before = Message.objects.latest("id").pk
    compose.submit(address=world.bob.address, raw=raw, actor="test", peer="test")
    drain()
    return Message.objects.get(direction=Message.Direction.INBOUND, peer="local", pk__gt=before)


def test_a_nul_in_a_failed_mdn_fails_the_delivery_once(world):
    """The Failure field goes into the delivery's history and the audit log: with a NUL there
    the report failed on every attempt and the delivery never failed."""
    message = _alice_to_bob(world)
    report = _report_from_bob(world, report_type="disposition-notification", fields=(
        f"Reporting-UA: hisp\x00ua\r\nFinal-Recipient: rfc822;{world.bob.address}\r\n"
        f"Original-Message-ID: {message.message_id}\r\n"
        "Disposition: automatic-action/MDN-sent-automatically;failed\r\n"
        "Failure: mailbox\x00full\x1b[2J"
    ))
    assert (report.state, report.kind, report.reason) == (
        Message.State.DELIVERED, Message.Kind.MDN, ""
    )
    delivery = Delivery.objects.get(message=message)
    assert delivery.state == Delivery.State.FAILED
    assert delivery.detail == "failed MDN: mailbox\ufffdfull\ufffd[2J"
    [event] = AuditEvent.objects.filter(action="delivery.failed", object_id=str(delivery.pk))
    assert event.detail["reason"] == delivery.detail


def test_a_nul_in_a_dsn_status_fails_the_delivery_once(world):
    message = _alice_to_bob(world)
    report = _report_from_bob(world, report_type="delivery-status", fields=(
        f"Reporting-MTA: dns; hisp\r\nOriginal-Message-ID: {message.message_id}\r\n\r\n"
        f"Final-Recipient: rfc822;{world.bob.address}\r\nAction: failed\r\n"
        "Status: 5.1.1\x00\r\nDiagnostic-Code: smtp; no\x00such user"
    ))
    assert (report.state, report.kind) == (Message.State.DELIVERED, Message.Kind.DSN)
    delivery = Delivery.objects.get(message=message)
    assert (delivery.state, delivery.detail) == (Delivery.State.FAILED, "DSN 5.1.1\ufffd")


@pytest.mark.parametrize("field", ["Original-Message-ID", "Final-Recipient"])
def test_a_nul_in_the_fields_a_report_is_matched_by_leaves_it_unmatched(world, field):
    """These fields are looked up in the database (which refuses a NUL even in a query):
    such a report matches nothing, and says so, instead of failing until it is rejected."""
    message = _alice_to_bob(world)
    original_id = message.message_id
    final = f"rfc822;{world.bob.address}"
    if field == "Original-Message-ID":
        original_id = original_id[:-1] + "\x00>"
    else:
        final = final.replace("@", "\x00@")
    report = _report_from_bob(world, report_type="disposition-notification", fields=(
        f"Final-Recipient: {final}\r\nOriginal-Message-ID: {original_id}\r\n"
        "Disposition: automatic-action/MDN-sent-automatically;failed"
    ))
    assert (report.state, report.reason) == (Message.State.DELIVERED, "report-unmatched")
    assert Delivery.objects.get(message=message).state == Delivery.State.PROCESSED


# --- The submission port --------------------------------------------------------------------

PASSWORD = "correct horse battery"


def _submission_client(controller) -> smtplib.SMTP:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client = smtplib.SMTP(controller.hostname, controller.port, timeout=10)
    client.ehlo("laptop")
    client.starttls(context=context)
    client.ehlo("laptop")
    return client


def test_a_nul_in_a_submitted_message_id_is_refused_at_once(submission, alice):
    """The Message-ID is looked up and stored as written: a NUL there (PostgreSQL refuses it)
    answered 451, and the client tried again for ever. RFC 5322 3.6.4 allows no control
    character in a msg-id: a permanent refusal that says why."""
    with _submission_client(submission) as client:
        client.login(alice.address, PASSWORD)
        client.mail(alice.address)
        client.rcpt("carol@partner.example.net")
        code, reply = client.data(
            f"From: {alice.address}\r\nTo: carol@partner.example.net\r\n"
            "Message-ID: <a\x00b@laptop>\r\nSubject: results\r\n\r\nHello\r\n".encode()
        )
    assert (code, reply[:5]) == (550, b"5.7.1")
    assert b"Message-ID" in reply
    assert Message.objects.count() == 0


def test_a_login_name_with_a_nul_is_a_failed_login(submission, alice):
    """AUTH LOGIN carries the name alone, so it can hold a NUL (PLAIN splits on it): looked up
    as it was, the database refused it and the session ended with 421 and a traceback in the
    log, uncounted by the lockout. Now it is a wrong login like any other."""
    name = alice.address.replace("@", "\x00@")
    with _submission_client(submission) as client:
        code, _ = client.docmd("AUTH", "LOGIN " + base64.b64encode(name.encode()).decode())
        assert code == 334
        code, reply = client.docmd(base64.b64encode(PASSWORD.encode()).decode())
        assert code == 535, reply
        assert client.noop()[0] == 250  # the session goes on
    # Counted like any failure: after four more, that name is refused for a while.
    for _ in range(4):
        with _submission_client(submission) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login(name, PASSWORD)
    with _submission_client(submission) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            client.login(name, PASSWORD)
    assert failure.value.smtp_code == 454


# --- Partners' certificates -----------------------------------------------------------------


def _odd_certificate(partner: Partner, names: list[x509.GeneralName]) -> x509.Certificate:
    """A certificate from the partner's CA for the partner's key, with the given SAN names
    (an IA5String can hold any ASCII character, NUL and line ends included)."""
    return leaf_certificate(partner.ca, partner.ca_key, partner.key, partner.address,
                            subject="Doc\x00\r\nInjected: yes", names=names)


def _signer_with(world, tmp_path, certificate: x509.Certificate) -> Partner:
    folder = tmp_path / "odd"
    folder.mkdir()
    p = world.partner
    signer = Partner(folder, p.ca_key, p.ca, p.key, certificate, p.address)
    signer.cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    signer.key_file.write_bytes(p.key_file.read_bytes())
    return signer


def test_a_signer_bound_by_domain_with_a_nul_in_another_san_name_is_delivered(world, tmp_path):
    """The signer is bound to the partner's domain by its dNSName; the rfc822Name beside it
    holds a NUL. The message log keeps the signer's first rfc822Name, and that NUL made the
    delivery fail on every attempt until the message was rejected."""
    signer = _signer_with(world, tmp_path, _odd_certificate(world.partner, [
        x509.RFC822Name(f"doc\x00x@{PARTNER}"), x509.DNSName(PARTNER),
    ]))
    inner = world.partner.inner(to=world.alice.address, message_id="<odd1@partner.example.net>")
    message = mail.accept_incoming(
        raw=world.partner.protect(inner, to=world.alice.address, signer=signer),
        mail_from=world.partner.address, rcpt_tos=[world.alice.address], peer="partner",
    )
    drain()
    message.refresh_from_db()
    assert (message.state, message.reason) == (Message.State.DELIVERED, "")
    assert message.signer == f"doc\ufffdx@{PARTNER}"


def test_a_refusal_quoting_a_non_ascii_message_id_is_an_ascii_reply(submission, alice):
    """A refusal may quote what the client sent; aiosmtpd writes replies as ASCII, so a
    Message-ID with 8-bit bytes (read as U+FFFD) ended the session with 421 and a traceback
    instead of the 550 that tells the client not to try again."""
    raw = (
        f"From: {alice.address}\r\nTo: carol@partner.example.net\r\n".encode()
        + b"Message-ID: <r\xe9sultat@laptop>\r\nSubject: results\r\n\r\nHello\r\n"
    )
    with _submission_client(submission) as client:
        client.login(alice.address, PASSWORD)
        for expected, body in ((250, b"Hello\r\n"), (550, b"Another message\r\n")):
            client.mail(alice.address)
            client.rcpt("carol@partner.example.net")
            code, reply = client.data(raw.replace(b"Hello\r\n", body))
            assert code == expected, reply
    assert b"was already sent" in reply and reply.isascii()
    assert Message.objects.count() == 1


def test_a_line_end_in_a_signers_crl_url_does_not_forge_log_lines(world, tmp_path, caplog):
    """The revocation checker logs the URLs it could not use; they come from the signer's
    certificate, and an IA5String may hold CR LF: each value is one line of the log."""
    forged = "http://127.0.0.1:9/partner.crl\r\nCRITICAL forged entry"
    signer = _signer_with(world, tmp_path, leaf_certificate(
        world.partner.ca, world.partner.ca_key, world.partner.key, world.partner.address,
        crl_url=forged,
    ))
    inner = world.partner.inner(to=world.alice.address, message_id="<odd2@partner.example.net>")
    caplog.set_level(logging.INFO, logger="agent")
    message = mail.accept_incoming(
        raw=world.partner.protect(inner, to=world.alice.address, signer=signer),
        mail_from=world.partner.address, rcpt_tos=[world.alice.address], peer="partner",
    )
    # No revocation source could be used: a transient failure, retried later.
    assert inbound.process(message.pk) == "retry"
    revocation = [r.getMessage() for r in caplog.records if "revocation source" in r.getMessage()]
    assert revocation, [r.getMessage() for r in caplog.records]
    for line in revocation:
        assert "\r" not in line and "\n" not in line, line


def test_a_from_address_with_a_nul_is_refused_at_once(world, tmp_path, caplog):
    """A domain-bound signer binds any local part of its domain, so the From address is the
    sender's own words. With a NUL there the message was trusted and delivered, and then the
    MDN to that address (a delivery row) failed in the database on every attempt until the
    message was rejected. No address holds a control character (RFC 5322 3.4.1)."""
    signer = _signer_with(world, tmp_path, _odd_certificate(world.partner, [x509.DNSName(PARTNER)]))
    sender = f"doc\x00x@{PARTNER}"
    inner = (
        f"From: {sender}\r\nTo: {world.alice.address}\r\nSubject: Referral\r\n"
        "Message-ID: <odd3@partner.example.net>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain\r\n\r\nPatient summary.\r\n"
    ).encode()
    wire = world.partner.protect(inner, to=world.alice.address, signer=signer, binary=True)
    head, sep, body = wire.partition(b"\r\n\r\n")
    head = head.replace(f"From: {world.partner.address}".encode(), f"From: {sender}".encode())
    assert sender.encode() in head
    message = mail.accept_incoming(
        raw=head + sep + body, mail_from=world.partner.address,
        rcpt_tos=[world.alice.address], peer="partner",
    )
    caplog.set_level(logging.INFO, logger="hisp")
    drain()
    message.refresh_from_db()
    assert (message.state, message.reason) == (Message.State.REJECTED, "malformed")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert world.sink.handler.messages == []  # no MDN
