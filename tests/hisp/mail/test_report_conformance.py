"""The MDNs (RFC 3798) and DSNs (RFC 3464) we write, checked against the texts, and the reports
we read from other HISPs, in the spellings they come in (RFC 5322 lets field names, values and
line breaks vary; the Java reference implementation leaves out ``rfc822;``)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from hisp import dsn, mailtext, mdn
from hisp.reports import ReportError, field_blocks

ALICE = "alice@hospital.example.org"
DOC = "doc@partner.example.net"


def _mdn(**overrides) -> bytes:
    arguments = {
        "reporting_host": "hisp.example.org",
        "sender": ALICE,
        "to": DOC,
        "message_id": "<r1@hisp.example.org>",
        "original_message_id": "<o1@partner.example.net>",
        "final_recipient": ALICE,
        "disposition": "processed",
        "subject": "Referral",
    } | overrides
    return mdn.build(**arguments)


def _dsn(**overrides) -> bytes:
    arguments = {
        "reporting_host": "hisp.example.org",
        "sender": "postmaster@hospital.example.org",
        "to": ALICE,
        "message_id": "<d1@hisp.example.org>",
        "original_message_id": "<o1@hisp.example.org>",
        "original_headers": b"From: alice@hospital.example.org\r\nSubject: x\r\n",
        "recipients": [dsn.RecipientStatus(DOC, "failed", "5.1.1", diagnostic="smtp; 550 5.1.1")],
        "explanation": "Your message could not be delivered.",
    } | overrides
    return dsn.build(**arguments)


def _lines(raw: bytes) -> list[bytes]:
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    return raw.split(b"\r\n")


def _machine_fields(raw: bytes) -> dict[str, str]:
    return {k.lower(): v for block in field_blocks(raw, mailtext.is_report(raw)) for k, v in block}


# --- MDNs we write ---------------------------------------------------------------------------


def test_an_mdn_names_no_original_recipient_it_does_not_know():
    """RFC 3798 3.2.3: Original-Recipient only from the original's Original-Recipient header
    field (or another reliable source); the envelope recipient is the Final-Recipient."""
    assert b"Original-Recipient" not in _mdn()
    fields = _machine_fields(_mdn(original_recipient="Alice@Hospital.example.org"))
    assert fields["original-recipient"] == "rfc822;Alice@Hospital.example.org"
    assert fields["final-recipient"] == f"rfc822;{ALICE}"


def test_an_mdn_has_the_parts_and_fields_rfc_3798_asks_for():
    raw = _mdn(disposition="failed", failure="mailbox unavailable")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "disposition-notification"
    human, machine = message.get_payload()
    assert human.get_content_type() == "text/plain"
    assert machine.get_content_type() == "message/disposition-notification"
    assert message["Auto-Submitted"] == "auto-replied"  # RFC 3834 section 5
    assert "Disposition-Notification-To" not in message
    assert message["Message-ID"] == "<r1@hisp.example.org>" and message["Date"]
    fields = _machine_fields(raw)
    assert fields["reporting-ua"].startswith("hisp.example.org;")
    assert fields["original-message-id"] == "<o1@partner.example.net>"
    assert fields["disposition"] == "automatic-action/MDN-sent-automatically;failed"
    assert fields["failure"] == "mailbox unavailable"
    assert "x-direct-final-destination-delivery" not in fields


def test_an_mdn_keeps_every_line_short_whatever_the_subject():
    """RFC 5322 2.1.1: at most 998 characters a line, and 78 where it can be folded. The
    Subject quotes the original's, which may be as long as its sender made it."""
    subject = "Referral " * 400
    raw = _mdn(subject=subject)
    assert max(len(line) for line in _lines(raw)) <= 78
    assert mailtext.summarise(raw).subject == "Processed: " + subject.strip()
    assert mdn.parse(raw).final_recipient == ALICE


def test_an_mdn_quotes_a_subject_beyond_ascii_as_encoded_words():
    raw = _mdn(subject="Référence für Müller")
    assert raw.isascii()
    assert mailtext.summarise(raw).subject == "Processed: Référence für Müller"


@pytest.mark.parametrize(
    ("disposition", "failure"),
    [
        ("failed", True),
        ("processed/error", True),
        ("processed/warning", False),
        ("deleted", False),  # delivered, then deleted by the recipient
        ("denied", False),  # delivered; the recipient will not say what became of it
        ("displayed", False),
    ],
)
def test_only_failed_or_error_dispositions_are_failures(disposition, failure):
    """RFC 3798 3.2.6.2 and 3.2.6.3; Implementation Guide section 3.4 for "failed"."""
    raw = _mdn().replace(b";processed", f";{disposition}".encode())
    assert mdn.parse(raw).is_failure is failure


# --- DSNs we write ---------------------------------------------------------------------------


def test_a_dsn_says_when_the_message_arrived():
    """RFC 3464 2.2.5 Arrival-Date, among the per-message fields before the extension ones."""
    raw = _dsn(arrived=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC))
    per_message = field_blocks(raw, "delivery-status")[0]
    assert [name for name, _ in per_message] == [
        "Reporting-MTA",
        "Arrival-Date",
        "X-Original-Message-ID",
    ]
    assert dict(per_message)["Arrival-Date"] == "Tue, 04 Mar 2025 05:06:07 +0000"
    assert dsn.parse(raw).original_message_id == "<o1@hisp.example.org>"


def test_a_dsn_folds_a_long_diagnostic_and_explanation():
    reply = "smtp; 550 5.1.1 " + "the mailbox you are trying to reach does not exist " * 20
    raw = _dsn(
        recipients=[dsn.RecipientStatus(DOC, "failed", "5.1.1", diagnostic=reply)],
        explanation="Your message could not be delivered: " + reply,
    )
    assert max(len(line) for line in _lines(raw)) <= 78
    assert dsn.parse(raw).recipients[0].diagnostic == " ".join(reply.split())
    assert " ".join(mailtext.summarise(raw).body_text.split()).endswith(" ".join(reply.split()))


# --- Reports we read -------------------------------------------------------------------------

MDN_FIELDS = (
    "Reporting-UA: partner.example.net; Direct\r\n"
    f"Final-Recipient: rfc822;{DOC}\r\n"
    "Original-Message-ID: <o1@hospital.example.org>\r\n"
    "Disposition: automatic-action/MDN-sent-automatically;processed\r\n"
)


def _report(report_type: str, fields: str, *, human: bool = True, third: str = "") -> bytes:
    machine = {
        "disposition-notification": "message/disposition-notification",
        "delivery-status": "message/delivery-status",
    }[report_type]
    text = "--b1\r\nContent-Type: text/plain\r\n\r\nA report.\r\n" if human else ""
    return (
        f"From: {DOC}\r\nTo: {ALICE}\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="b1"\r\n\r\n'
        f"{text}--b1\r\nContent-Type: {machine}\r\n\r\n{fields}\r\n{third}--b1--\r\n"
    ).encode()


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(MDN_FIELDS.lower(), id="field-names-and-values-in-lower-case"),
        pytest.param(MDN_FIELDS.replace(";processed", "; PROCESSED "), id="value-case-spaces"),
        pytest.param(
            MDN_FIELDS.replace("automatic-action/", "automatic-action/\r\n\t"), id="folded"
        ),
        pytest.param(MDN_FIELDS.replace("rfc822;", ""), id="no-address-type"),
        pytest.param(
            MDN_FIELDS.replace("rfc822;", "RFC822; <").replace(f"{DOC}\r\n", f"{DOC}>\r\n"),
            id="address-type-upper-case-angle-brackets",
        ),
        pytest.param(MDN_FIELDS.replace("Disposition:", "Disposition :"), id="space-before-colon"),
        pytest.param("\r\n" + MDN_FIELDS, id="empty-line-before-the-fields"),
    ],
)
def test_an_mdn_is_read_in_any_spelling(fields):
    report = mdn.parse(_report("disposition-notification", fields))
    assert (report.disposition, report.final_recipient, report.original_message_id) == (
        "processed",
        DOC,
        "<o1@hospital.example.org>",
    )


def test_an_mdn_is_read_without_its_human_readable_part_and_with_modifiers():
    fields = MDN_FIELDS.replace(";processed", ";processed/warning")
    report = mdn.parse(_report("disposition-notification", fields, human=False))
    assert (report.disposition, report.modifiers, report.is_failure) == (
        "processed",
        ("warning",),
        False,
    )


DSN_FIELDS = (
    "Reporting-MTA: dns; partner.example.net\r\n\r\n"
    f"Final-Recipient: rfc822; {DOC}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
)
RETURNED = "Message-ID: <o1@hospital.example.org>\r\nSubject: Referral\r\n"


@pytest.mark.parametrize(
    "third",
    [
        f"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n{RETURNED}\r\n",
        f"--b1\r\nContent-Type: message/rfc822\r\n\r\n{RETURNED}\r\nThe text.\r\n",
    ],
    ids=["returned-headers", "returned-message"],
)
def test_a_dsn_without_an_original_message_id_field_names_it_by_its_returned_headers(third):
    """RFC 3464 has no Original-Message-ID field (only the reference implementations' X- one):
    a plain DSN says which message it is about with the headers it returns."""
    report = dsn.parse(_report("delivery-status", DSN_FIELDS, third=third))
    assert report.original_message_id == "<o1@hospital.example.org>"
    assert dsn.parse(_report("delivery-status", DSN_FIELDS)).original_message_id is None


def test_a_dsn_is_read_with_a_space_before_a_colon():
    report = dsn.parse(_report("delivery-status", DSN_FIELDS.replace("Action:", "Action :")))
    assert [(r.final_recipient, r.action, r.status) for r in report.recipients] == [
        (DOC, "failed", "5.1.1")
    ]


def test_a_report_without_its_machine_readable_part_is_malformed():
    with pytest.raises(ReportError, match="no message/disposition-notification part"):
        mdn.parse(
            _report("disposition-notification", "").replace(
                b"message/disposition-notification", b"text/plain"
            )
        )


@pytest.mark.parametrize(
    "value",
    [
        'X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,"true"',
        "X-DIRECT-FINAL-DESTINATION-DELIVERY = Required , TRUE",
        "signed-receipt-micalg=optional,sha1,md5; X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true",
    ],
)
def test_a_final_delivery_request_is_recognised_in_any_spelling(value):
    """RFC 3798 2.2: a parameter value is a ``word``, an atom or a quoted-string."""
    raw = f"From: a@x.org\r\nDisposition-Notification-Options: {value}\r\n\r\nx\r\n".encode()
    assert mailtext.wants_final_delivery(raw) is True
