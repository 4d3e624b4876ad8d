"""MDN (RFC 3798) and DSN (RFC 3464) building and parsing, with the Java reference
implementation's vectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hisp import dsn, mailtext, mdn
from hisp.reports import ReportError

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "java-ri"


def _vector(name: str) -> bytes:
    path = VECTORS / name
    if not path.exists():
        pytest.skip(f"vector {name} not available")
    return path.read_bytes()


def test_java_processed_mdn_parses():
    report = mdn.parse(_vector("MDNMessage.txt"))
    assert report.disposition == "processed"
    assert report.original_message_id == "<9501051053.aa04167@IETF.CNR I.Reston.VA.US>"
    assert report.final_recipient == "externUser1@starugh-stateline.com"
    assert not report.final_delivery


def test_java_dispatched_mdn_parses_with_final_delivery_field():
    report = mdn.parse(_vector("MDNDispatchedMessage.txt"))
    assert report.disposition == "dispatched"
    assert report.final_delivery


def test_java_dsn_parses():
    report = dsn.parse(_vector("DSNMessage.txt"))
    assert report.reporting_mta == "Example.ORG"
    assert report.original_message_id == "<9501051053.aa04167@IETF.CNR I.Reston.VA.US>"
    [rcpt] = report.recipients
    assert (rcpt.final_recipient, rcpt.action, rcpt.status) == ("Carol@Ivory.EDU", "failed", "5.0.0")


def test_built_mdn_round_trips_and_asks_for_no_mdn():
    raw = mdn.build(
        reporting_host="hisp.example.org", sender="alice@hospital.example.org",
        to="doc@partner.example.net", message_id="<r1@hisp.example.org>",
        original_message_id="<o1@partner.example.net>",
        original_recipient="alice@hospital.example.org",
        final_recipient="alice@hospital.example.org", disposition="dispatched",
        subject="Referral", final_delivery=True,
    )
    assert b"Disposition-Notification-To" not in raw
    assert b"Disposition: automatic-action/MDN-sent-automatically;dispatched" in raw
    assert b"Reporting-UA: hisp.example.org" in raw
    assert mailtext.is_report(raw) == "disposition-notification"
    assert mailtext.is_auto_generated(raw, envelope_from="alice@hospital.example.org")
    report = mdn.parse(raw)
    assert (report.disposition, report.final_delivery) == ("dispatched", True)
    assert report.original_recipient == "alice@hospital.example.org"


def test_only_a_dispatched_mdn_carries_the_final_delivery_field():
    with pytest.raises(ValueError):
        mdn.build(
            reporting_host="h", sender="a@x.org", to="b@y.org", message_id="<1@h>",
            original_message_id="<o@y>", original_recipient="a@x.org",
            final_recipient="a@x.org", disposition="processed", final_delivery=True,
        )


def test_built_dsn_round_trips():
    raw = dsn.build(
        reporting_host="hisp.example.org", sender="postmaster@hisp.example.org",
        to="alice@hospital.example.org", message_id="<d1@hisp.example.org>",
        original_message_id="<o1@hisp.example.org>",
        original_headers=b"From: alice@hospital.example.org\r\nSubject: x\r\n",
        recipients=[dsn.RecipientStatus("doc@partner.example.net", "failed", "5.7.31",
                                        diagnostic="x-direct; no-recipient-certificate")],
        explanation="no certificate",
    )
    report = dsn.parse(raw)
    assert report.original_message_id == "<o1@hisp.example.org>"
    assert report.recipients[0].status == "5.7.31"
    assert b"text/rfc822-headers" in raw


def test_mdn_without_original_message_id_is_malformed():
    raw = _vector("MDNMessage.txt").replace(b"Original-Message-ID", b"X-Other")
    with pytest.raises(ReportError):
        mdn.parse(raw)


def test_mdn_with_unknown_disposition_is_malformed():
    raw = _vector("MDNMessage.txt").replace(b";processed", b";exploded")
    with pytest.raises(ReportError):
        mdn.parse(raw)


def test_dsn_recipient_without_status_is_malformed():
    raw = _vector("DSNMessage.txt").replace(b"Status: 5.0.0", b"")
    with pytest.raises(ReportError):
        dsn.parse(raw)


def test_plain_message_is_not_a_report():
    with pytest.raises(ReportError):
        mdn.parse(b"From: a@x.org\r\nSubject: hi\r\n\r\nbody\r\n")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true", True),
        ("x-direct-final-destination-delivery=required,true", True),
        ("something-else=optional,foo", False),
    ],
)
def test_final_delivery_request_is_recognised(value, expected):
    raw = f"From: a@x.org\r\nDisposition-Notification-Options: {value}\r\n\r\nx\r\n".encode()
    assert mailtext.wants_final_delivery(raw) is expected


@pytest.mark.parametrize(
    "value",
    [
        "X-DIRECT-FINAL-DESTINATION-DELIVERY=maybe",
        "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,false",
        "X-DIRECT-FINAL-DESTINATION-DELIVERY",
    ],
)
def test_malformed_final_delivery_request_is_detected(value):
    raw = f"From: a@x.org\r\nDisposition-Notification-Options: {value}\r\n\r\nx\r\n".encode()
    with pytest.raises(mailtext.OptionsMalformed):
        mailtext.wants_final_delivery(raw)
